"""Scripts called on their own connections (a worker's delivery steps) behave as calls
through the redis-py client do: once per call, after a script flush or a server restart,
after a failure, and in a forked child."""

from __future__ import annotations

import gc
import os
import time
import weakref
from collections.abc import Iterator

import pytest
import redis

from integration.ops.embedded_redis import EmbeddedRedis
from integration.store.connections import OwnConnectionScript, execute_loading, own_connections

COUNT = "redis.call('INCR', KEYS[1]); return {tonumber(redis.call('GET', KEYS[1])), ARGV[1]}"


@pytest.fixture
def client(private_redis: EmbeddedRedis) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(private_redis.url, socket_timeout=2, health_check_interval=30,
                                  retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0))
    yield client
    client.close()


def counting(client: redis.Redis) -> OwnConnectionScript:
    return OwnConnectionScript(client.register_script(COUNT))


def test_each_call_runs_once_and_gets_its_own_reply(client: redis.Redis) -> None:
    script = counting(client)
    assert [script(keys=["n"], args=[f"call-{i}"]) for i in range(3)] == [
        [1, b"call-0"], [2, b"call-1"], [3, b"call-2"]]
    client.script_flush()  # NOSCRIPT: loaded and run once more, which ran nothing before
    assert script(keys=["n"], args=["after-flush"]) == [4, b"after-flush"]
    assert client.get("n") == b"4"


def test_a_script_error_is_raised_and_the_next_call_gets_its_own_reply(
        client: redis.Redis) -> None:
    script = OwnConnectionScript(client.register_script(
        "if ARGV[1] == 'fail' then return redis.error_reply('refused') end return ARGV[1]"))
    assert script(args=["first"]) == b"first"
    with pytest.raises(redis.ResponseError, match="refused"):
        script(args=["fail"])
    assert script(args=["second"]) == b"second"


def test_a_call_while_the_server_is_down_fails_and_the_next_one_reconnects(
        client: redis.Redis, private_redis: EmbeddedRedis) -> None:
    script = counting(client)
    assert script(keys=["n"], args=["up"]) == [1, b"up"]
    private_redis.stop()
    with pytest.raises(redis.ConnectionError):
        script(keys=["n"], args=["down"])
    private_redis.start()
    assert script(keys=["n"], args=["back"]) == [1, b"back"]  # a new server: a new count


def test_a_connection_the_server_closed_while_idle_is_replaced(
        client: redis.Redis, private_redis: EmbeddedRedis) -> None:
    script = counting(client)
    assert script(keys=["n"], args=["before"]) == [1, b"before"]
    private_redis.stop()
    private_redis.start()  # the idle connection's socket now only holds its end
    time.sleep(1.2)  # idle past the quiet second after which a connection is checked first
    assert script(keys=["n"], args=["after"]) == [1, b"after"]


def test_a_forked_child_uses_a_connection_of_its_own(client: redis.Redis) -> None:
    script = counting(client)
    assert script(keys=["n"], args=["parent"]) == [1, b"parent"]
    connections = client.info("stats")["total_connections_received"]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its call's reply, then leave at once
        try:
            os.write(write, repr(script(keys=["n"], args=["child"])).encode())
        finally:
            os._exit(0)
    os.close(write)
    childs = os.read(read, 256).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert childs == repr([2, b"child"])
    assert client.info("stats")["total_connections_received"] == connections + 1
    assert script(keys=["n"], args=["parent"]) == [3, b"parent"]  # its own, still intact


def test_the_scripts_of_one_client_share_its_own_connections(client: redis.Redis) -> None:
    connections = client.info("stats")["total_connections_received"]
    first, second = counting(client), OwnConnectionScript(client.register_script("return 2"))
    for _ in range(3):
        assert first(keys=["n"], args=["x"])[1] == b"x"
        assert second() == 2
    assert client.info("stats")["total_connections_received"] == connections + 1


def test_a_discarded_clients_connections_go_with_it(private_redis: EmbeddedRedis) -> None:
    pools = []
    for _ in range(3):
        client = redis.Redis.from_url(private_redis.url)
        assert counting(client)(keys=["n"], args=["x"])[1] == b"x"
        pools.append(weakref.ref(client.connection_pool))
        client.close()
    del client
    gc.collect()
    assert [pool() for pool in pools] == [None, None, None]


def test_a_transaction_gives_what_redis_pys_pipeline_gives(client: redis.Redis) -> None:
    own = own_connections(client)
    sha = client.script_load(COUNT)
    commands = [("RPUSH", "l", "a", "b"), ("INCR", "n"), ("EVALSHA", sha, 1, "n", "x"),
                ("LRANGE", "l", 0, -1), ("GET", "n")]
    pipe = client.pipeline(transaction=True)
    for command in commands:
        pipe.execute_command(*command)
    expected = pipe.execute()
    client.delete("l", "n")
    assert own.pipeline(commands, transaction=True) == expected == [
        2, 1, [2, b"x"], [b"a", b"b"], b"2"]
    assert own.pipeline(commands[1:2]) == [3]


def test_a_command_refused_while_queued_aborts_the_whole_transaction(
        client: redis.Redis) -> None:
    own = own_connections(client)
    with pytest.raises(redis.ResponseError, match="wrong number of arguments"):
        own.pipeline([("SET", "a", "1"), ("INCR",), ("SET", "b", "1")], transaction=True)
    assert client.exists("a", "b") == 0
    assert own.pipeline([("SET", "c", "1"), ("GET", "c")], transaction=True) == [b"OK", b"1"]


@pytest.mark.parametrize("first", [True, False], ids=["first-reply", "later-reply"])
def test_an_error_while_executing_is_raised_after_the_rest_ran(
        client: redis.Redis, first: bool) -> None:
    """As in Redis, the other commands of the transaction ran; the connection reads on."""
    own = own_connections(client)
    client.rpush("list", "x")
    wrong = ("INCR", "list")
    commands = [wrong, ("SET", "a", "1")] if first else [("SET", "a", "1"), wrong]
    with pytest.raises(redis.ResponseError, match="WRONGTYPE|not an integer"):
        own.pipeline(commands, transaction=True)
    assert client.get("a") == b"1"
    with pytest.raises(redis.ResponseError, match="WRONGTYPE|not an integer"):
        own.pipeline([wrong, ("SET", "b", "2")])
    assert client.get("b") == b"2"
    assert own.pipeline([("GET", "a"), ("GET", "b")]) == [b"1", b"2"]


def test_a_forgotten_script_in_a_transaction_raises_noscript(client: redis.Redis) -> None:
    """What ``execute_loading`` waits for to load the script and run the pipeline again."""
    own = own_connections(client)
    sha = client.script_load(COUNT)
    client.script_flush()
    with pytest.raises(redis.exceptions.NoScriptError):
        own.pipeline([("EVALSHA", sha, 1, "n", "x"), ("SET", "a", "1")], transaction=True)
    with pytest.raises(redis.exceptions.NoScriptError):
        own.pipeline([("SET", "b", "1"), ("EVALSHA", sha, 1, "n", "x")])
    loaded = execute_loading(client, [COUNT], lambda: own.pipeline(
        [("EVALSHA", sha, 1, "n", "y")], transaction=True))
    assert loaded == [[1, b"y"]]

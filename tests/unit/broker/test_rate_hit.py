"""A submit's rate-limit hit as the enqueue script takes it (decision 0011)."""

from __future__ import annotations

from limits import parse
from limits.storage import RedisStorage

from integration.broker.redis_enqueue import NO_HIT, RateHit, rate_limit_part
from integration.gateway.ratelimitstore import CoalescedRedisStorage
from tests.conftest import NO_REDIS


def test_a_hit_is_six_arguments_with_or_without_a_previous_window() -> None:
    """The script reads six ARGV per record: strategy, current key, previous key (a
    sliding window's), limit, window, cost; a record without a hit sends as many."""
    sliding = RateHit("sliding-window-counter", ("L:{k}", "L:{k}/-1"), 5, 3600)
    moving = RateHit("moving-window", ("L:k",), 5, 3600, cost=2)
    assert sliding.args() == ["sliding-window-counter", "L:{k}", "L:{k}/-1", 5, 3600, 1]
    assert moving.args() == ["moving-window", "L:k", "", 5, 3600, 2]
    assert len(NO_HIT) == len(moving.args())
    assert NO_HIT[0] == ""


def test_the_script_counts_with_the_librarys_own_scripts() -> None:
    """Each strategy's function is the ``limits`` library's script text, unchanged."""
    part = rate_limit_part()
    for name, text in (("fixed_window", RedisStorage.SCRIPT_INCR_EXPIRE),
                       ("moving_window", RedisStorage.SCRIPT_ACQUIRE_MOVING_WINDOW),
                       ("sliding_window", RedisStorage.SCRIPT_ACQUIRE_SLIDING_WINDOW)):
        assert f"rate_limit.{name} = function(KEYS, ARGV)\n{text.decode()}\nend\n" in part


def test_the_hit_names_the_keys_flask_limiter_counts_in() -> None:
    """The storage names the Redis keys of a limit's ``key_for`` as its own hits write
    them: one key, or a sliding window's current and previous ones."""
    storage = CoalescedRedisStorage("integration+" + NO_REDIS)
    key = parse("5/hour").key_for("prefix", "sub:ann", "api")
    assert storage.window_keys("moving-window", key) == (f"LIMITS:{key}",)
    assert storage.window_keys("fixed-window", key) == (f"LIMITS:{key}",)
    assert storage.window_keys("sliding-window-counter", key) == (
        f"LIMITS:{{{key}}}", f"LIMITS:{{{key}}}/-1")


def test_a_hit_counts_when_its_transaction_ran_or_may_have() -> None:
    """The gateway counts a hit itself only for a message refused before its transaction
    (invalid, a full queue, a broker that could not be reached)."""
    from integration.broker.submission import (
        Accepted,
        InDoubt,
        RateLimited,
        Repeated,
        Unreplicated,
        hit_counted,
    )
    from integration.messages.problems import Conflict, Unavailable, invalid

    accepted = Accepted("m1", "metric")
    for ran in (accepted, RateLimited(), Repeated("{}"), Conflict("exists"),
                InDoubt(accepted, 5, recorded=False), Unreplicated(accepted, 5)):
        assert hit_counted(ran), ran
    for refused in (Unavailable("queue full"), invalid([], "invalid")):
        assert not hit_counted(refused), refused

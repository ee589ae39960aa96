"""The console's sign-in link: a single-use code (or the token) in the fragment, which no
request carries."""

from __future__ import annotations

from urllib.parse import urlsplit

import redis

from integration.ops.consolelink import console_link
from integration.ops.devstack import banner
from integration.security.signin import SignInLinks
from integration.sources import StackRecord


def test_the_token_travels_in_the_fragment_only() -> None:
    """Path /console, nothing in the query, the token (quoted) after #token=."""
    link = console_link("http://127.0.0.1:8000/", "a.b+c/d")
    parts = urlsplit(link)
    assert (parts.path, parts.query) == ("/console", "")
    assert parts.fragment == "token=a.b%2Bc%2Fd"


def test_the_dev_stack_banner_prints_a_single_use_link(redis_client: redis.Redis) -> None:
    """`make run` shows the console line beside the gateway's URL, with a code, not the token."""
    record = StackRecord(pid=1, gateway_url="http://127.0.0.1:8000", host="127.0.0.1",
                         port=8000, redis_url="redis://127.0.0.1:6379/0", redis_embedded=True,
                         metrics_port=0)
    links = SignInLinks(redis_client, "consolelink-test", ttl=60)
    text = banner(record, "tok", links=links)
    line = next(line for line in text.splitlines() if line.strip().startswith("console"))
    code = line.split("#code=")[1]
    assert links.redeem(code) == "tok"

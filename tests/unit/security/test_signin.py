"""Single-use sign-in codes: a code gives its token once, and only a hash of it is stored."""

from __future__ import annotations

import redis

from integration.security.signin import SignInLinks


def test_a_code_gives_its_token_once_and_is_stored_hashed(redis_client: redis.Redis) -> None:
    links = SignInLinks(redis_client, "signin-test", ttl=60)
    code = links.create("the-token")
    stored = redis_client.keys("signin-test:signin:*")
    assert len(stored) == 1 and code.encode() not in stored[0]
    assert 0 < redis_client.ttl(stored[0]) <= 60
    assert links.redeem(code) == "the-token"
    assert links.redeem(code) is None
    assert links.redeem("") is None and links.redeem("x" * 500) is None

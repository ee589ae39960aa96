"""The private names of libraries the service relies on (docs/decisions/0008): each test
fails when a release moves one, before the behaviour that rests on it silently goes."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import flask_jwt_extended
from flask_jwt_extended import JWTManager, utils, view_decorators


def parameters(function: Callable[..., Any]) -> list[str]:
    return list(inspect.signature(function).parameters)


def calls(function: Callable[..., Any]) -> set[str]:
    """The global and attribute names a function's code refers to."""
    return set(inspect.unwrap(function).__code__.co_names)


def test_flask_jwt_extended_decodes_every_token_through_the_managers_method() -> None:
    """``VerifyingJWTManager`` overrides ``_decode_jwt_from_config``, which ``decode_token``
    (and so every request's verification) calls with these parameters."""
    assert parameters(JWTManager._decode_jwt_from_config) == [
        "self", "encoded_token", "csrf_value", "allow_expired"]
    assert "_decode_jwt_from_config" in calls(utils.decode_token)
    assert "decode_token" in calls(view_decorators._decode_jwt_from_request)


def test_flask_jwt_extended_reads_the_header_by_a_name_of_its_view_decorators() -> None:
    """The gateway points ``view_decorators.get_unverified_jwt_headers`` at its remembered
    headers; a request's verification must still look the name up there."""
    assert parameters(flask_jwt_extended.get_unverified_jwt_headers) == ["encoded_token"]
    assert parameters(view_decorators.get_unverified_jwt_headers) == ["encoded_token"]
    assert "get_unverified_jwt_headers" in calls(view_decorators._decode_jwt_from_request)


def test_limits_redis_storage_has_the_scripts_and_keys_the_coalesced_storage_calls() -> None:
    """``CoalescedRedisStorage`` sends ``RedisStorage``'s own hit scripts, with its keys, in
    one pipeline: the scripts are registered under these names, the hit methods it replaces
    take these parameters, and the sliding window's keys come from these helpers."""
    from limits.storage import RedisStorage

    registered = calls(RedisStorage.initialize_storage)
    for script in ("lua_acquire_moving_window", "lua_acquire_sliding_window",
                   "lua_incr_expire"):
        assert script in registered, script
    for hit in (RedisStorage.acquire_entry, RedisStorage.acquire_sliding_window_entry):
        assert parameters(hit) == ["self", "key", "limit", "expiry", "amount"]
    assert parameters(RedisStorage.incr) == ["self", "key", "expiry", "amount"]
    for helper in (RedisStorage.prefixed_key, RedisStorage._current_window_key,
                   RedisStorage._previous_window_key):
        assert parameters(helper) == ["self", "key"]
    assert parameters(RedisStorage.get_connection) == ["self", "readonly"]
    # The library's hit methods still call the scripts the storage replaces them with.
    assert "lua_acquire_moving_window" in calls(RedisStorage.acquire_entry)
    assert "lua_acquire_sliding_window" in calls(RedisStorage.acquire_sliding_window_entry)
    assert "lua_incr_expire" in calls(RedisStorage.incr)


def test_limits_hit_scripts_are_the_ones_the_enqueue_script_embeds() -> None:
    """The enqueue script counts a submit's hit with ``RedisStorage``'s script texts
    (``SCRIPT_*``), called with the ARGV the storage's hit methods give them, and a fixed
    window is an ``incr`` compared with the limit by ``FixedWindowRateLimiter.hit``."""
    from limits.storage import RedisStorage
    from limits.strategies import FixedWindowRateLimiter

    registered = calls(RedisStorage.initialize_storage)
    for text in ("SCRIPT_INCR_EXPIRE", "SCRIPT_ACQUIRE_MOVING_WINDOW",
                 "SCRIPT_ACQUIRE_SLIDING_WINDOW"):
        assert text in registered, text
    assert b"local amount = tonumber(ARGV[2])" in RedisStorage.SCRIPT_INCR_EXPIRE
    moving = RedisStorage.SCRIPT_ACQUIRE_MOVING_WINDOW
    assert b"local timestamp = tonumber(ARGV[1])" in moving
    assert b"local amount = tonumber(ARGV[4])" in moving
    sliding = RedisStorage.SCRIPT_ACQUIRE_SLIDING_WINDOW
    assert b"local limit = tonumber(ARGV[1])" in sliding
    assert b"local amount = tonumber(ARGV[3])" in sliding
    assert "incr" in calls(FixedWindowRateLimiter.hit)

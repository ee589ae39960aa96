"""Replaying or purging dead letters by filter walks the index once."""

from __future__ import annotations

import uuid

import redis

from integration.app import build_submitter
from integration.messages.status import Status
from integration.settings import Settings
from integration.store.model import NewRecord
from integration.worker.deadletters import DeadLetters
from tests.conftest import TEST_SECRET

QUEUE = "test.replay-walk"  # no worker consumes it: the test counts what was enqueued


def test_a_letter_that_dies_again_during_a_replay_is_replayed_once(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """`replay --all` over letters that fail again at once (a fast worker, a permanent
    error) replays each of them once, instead of going round until the limit."""
    submitter = build_submitter(Settings(redis_url=redis_url, jwt_secret=TEST_SECRET),
                                origin="tests")
    store, letters = submitter.store, DeadLetters(submitter.store, submitter.publisher)
    type_ = f"test.walk-{uuid.uuid4().hex[:6]}"
    ids = [uuid.uuid4().hex for _ in range(150)]
    store.create_many([NewRecord(id=i, type=type_, queue=QUEUE, owner="tests", channel="direct",
                                 envelope={"id": i, "type": type_, "source": "tests",
                                           "specversion": "1.0", "data": {}})
                       for i in ids])
    for message_id in ids:
        store.transition(message_id, Status.DEAD)
    redis_client.delete(QUEUE)

    def die_again(_: int) -> None:
        for message_id in ids:
            store.transition(message_id, Status.DEAD, allowed_from=(Status.QUEUED,))

    try:
        replayed = letters.replay_matching(type=type_, limit=10_000, by="tests",
                                           progress=die_again)
        assert sorted(r.id for r in replayed) == sorted(ids)
        assert redis_client.llen(QUEUE) == len(ids)
        assert letters.purge(type=type_) == len(ids)
        assert all(store.get(i) is None for i in ids)
    finally:
        redis_client.delete(QUEUE)

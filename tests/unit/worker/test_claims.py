"""The claim keeper's view of whether a claim surely still holds, by its own clock."""

from __future__ import annotations

import time

import pytest

from integration.worker import claims
from integration.worker.claims import ClaimKeeper


def test_a_claim_is_fresh_for_a_third_of_its_lease_then_needs_asking(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Taken just now, it surely holds; a third of a lease later (a pause, a slow handler
    whose renewals failed), only Redis can say; outside ``holding``, it is not this
    delivery's."""
    keeper = ClaimKeeper(lambda *_: False, lease_seconds=30)
    now = time.monotonic()
    monkeypatch.setattr(claims.time, "monotonic", lambda: now)
    with keeper.holding("m", 1, "me"):
        assert keeper.fresh("m", 1)
        assert not keeper.fresh("m", 2)
        monkeypatch.setattr(claims.time, "monotonic", lambda: now + 10.5)
        assert not keeper.fresh("m", 1)
    assert not keeper.fresh("m", 1)


def test_a_confirmed_renewal_makes_the_claim_fresh_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A renewal Redis confirmed starts a new third of a lease; a refused one does not."""
    answers = [True]
    keeper = ClaimKeeper(lambda *_: answers[0], lease_seconds=30)
    now = time.monotonic()
    monkeypatch.setattr(claims.time, "monotonic", lambda: now)
    with keeper.holding("m", 1, "me"):
        monkeypatch.setattr(claims.time, "monotonic", lambda: now + 20)
        keeper.renew_all()
        assert keeper.fresh("m", 1)
        monkeypatch.setattr(claims.time, "monotonic", lambda: now + 40)
        answers[0] = False
        keeper.renew_all()
        assert not keeper.fresh("m", 1)

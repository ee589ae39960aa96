"""Whether what a subject made (a schedule, a webhook subscription) may still act for it: the
policy now in force grants its recorded roles the right, and the subject has not been revoked
since. Checked at every firing and every delivery."""

from __future__ import annotations

from datetime import datetime

from integration.security.policy import Policy
from integration.security.revocations import Revocations

NO_ROLES = ("it was made before its creator's roles were recorded; make it again to record "
            "them")


def _epoch(moment: str | None) -> float | None:
    try:
        return datetime.fromisoformat(moment).timestamp() if moment else None
    except ValueError:
        return None


class CreatorRights:
    """The creator's rights now, from the policy and the revocations."""

    def __init__(self, policy: Policy, revocations: Revocations) -> None:
        self.policy = policy
        self.revocations = revocations

    def _revoked(self, owner: str, created_at: str | None) -> str | None:
        if self.revocations.revoked_since(owner, _epoch(created_at)):
            return f"its creator {owner!r} was revoked after making it"
        return None

    def to_submit(self, owner: str, roles: list[str] | None, created_at: str | None,
                  message_type: str) -> str | None:
        """Why a firing of ``message_type`` is refused now, or None when it may go."""
        if roles is None:
            return NO_ROLES
        if not self.policy.grants(roles).may_submit(message_type):
            return f"its creator's roles ({', '.join(roles) or 'none'}) may no longer submit " \
                   f"{message_type!r}"
        return self._revoked(owner, created_at)

    def to_deliver(self, owner: str, roles: list[str] | None, created_at: str | None,
                   topic: str, message_owner: str | None) -> str | None:
        """Why a delivery on ``topic`` of a message of ``message_owner`` is refused now."""
        if roles is None:
            return NO_ROLES
        grants = self.policy.grants(roles)
        if not grants.may_subscribe(topic):
            return f"its creator's roles ({', '.join(roles) or 'none'}) may no longer " \
                   f"subscribe to {topic!r}"
        if not grants.may_read(owner, message_owner):
            return "its creator's roles may no longer read this message's events"
        return self._revoked(owner, created_at)

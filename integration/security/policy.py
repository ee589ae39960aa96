"""Role-based authorization: what each role may submit, read, subscribe to and manage.

The policy file (``INTEGRATION_POLICY_FILE``, YAML or JSON; ``default_policy.yaml`` when
unset) is read once at start. Deny by default: a role grants only what it lists.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from importlib.resources import files
from pathlib import Path
from typing import Literal

import yaml
from limits import parse as parse_limit
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from integration.messages.memo import remember
from integration.mistakes import file_problem
from integration.settings import ConfigurationError

Resource = Literal["dead_letters", "schedules", "subscriptions", "tokens", "breakers",
                   "actions"]
ReadScope = Literal["none", "own", "any"]
#: Which of a resource's items a role may manage: its subject's own, or anyone's.
ManageScope = Literal["own", "any"]
#: Resources whose items belong to the subject that made them (the rest are shared).
OWNED: frozenset[str] = frozenset({"dead_letters", "schedules", "subscriptions", "actions"})
#: The outcomes whose topics a message's events are published on.
OUTCOMES = ("succeeded", "dead", "held")
_READ_ORDER: dict[str, int] = {"none": 0, "own": 1, "any": 2}
_WILDCARD = re.compile(r"[*?\[]")


def _check_limit(value: str | None) -> str | None:
    if value is not None:
        parse_limit(value)  # raises ValueError on a malformed limit such as "lots/second"
    return value


class RolePolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    submit: list[str] = Field(default_factory=list)
    read: ReadScope = "none"
    subscribe: list[str] = Field(default_factory=list)
    #: ``resource`` (the subject's own items) or ``resource:any`` (everyone's); or a mapping
    #: of resource to ``own`` or ``any``.
    manage: dict[Resource, ManageScope] = Field(default_factory=dict)
    rate_limit: str | None = None

    _limit = field_validator("rate_limit")(_check_limit)

    @field_validator("manage", mode="before")
    @classmethod
    def _manage_entries(cls, value: object) -> object:
        if not isinstance(value, list):
            return value
        scopes: dict[str, str] = {}
        for entry in value:
            name, _, scope = str(entry).partition(":")
            scopes[name] = scope or "own"
        return scopes


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    default_rate_limit: str = "50/second"
    roles: dict[str, RolePolicy] = Field(default_factory=dict)

    _limit = field_validator("default_rate_limit")(_check_limit)
    #: ``grants``' answers by roles: a caller sends the same roles with every request.
    _grants: dict[tuple[str, ...], Grants] = PrivateAttr(default_factory=dict)

    def grants(self, roles: Iterable[str]) -> Grants:
        """What a token with these roles may do: the union of its known roles (worked out
        once per set of roles, of which a deployment has few; at most ``_REMEMBERED``
        are kept)."""
        key = tuple(roles)
        grants = self._grants.get(key)
        if grants is None:
            grants = self._grants_of(key)
            remember(self._grants, key, grants, _REMEMBERED)
        return grants

    def _grants_of(self, roles: tuple[str, ...]) -> Grants:
        known = [self.roles[r] for r in roles if r in self.roles]
        read: ReadScope = max((r.read for r in known), key=_READ_ORDER.__getitem__,
                              default="none")
        limits = [r.rate_limit for r in known if r.rate_limit]
        manage: dict[str, ManageScope] = {}
        for role in known:
            for resource, scope in role.manage.items():
                if manage.get(resource) != "any":
                    manage[resource] = scope
        return Grants(
            submit=tuple(p for r in known for p in r.submit),
            read=read,
            subscribe=tuple(p for r in known for p in r.subscribe),
            manage=frozenset(manage),
            rate_limit=max(limits, key=_per_second) if limits else self.default_rate_limit,
            manage_scopes=tuple(sorted(manage.items())),
        )


def _per_second(limit: str) -> float:
    item = parse_limit(limit)
    return item.amount / item.get_expiry()


_REMEMBERED = 64


@dataclass(frozen=True)
class Grants:
    submit: tuple[str, ...]
    read: ReadScope
    subscribe: tuple[str, ...]
    manage: frozenset[str]
    rate_limit: str
    #: (resource, scope) for each managed resource.
    manage_scopes: tuple[tuple[str, ManageScope], ...] = ()
    #: ``may_submit``'s answers so far: the items of a batch share a few types, and each
    #: answer matches every grant's glob pattern. At most ``_REMEMBERED`` types.
    _submit_answers: dict[str, bool] = field(default_factory=dict, init=False,
                                             compare=False, hash=False, repr=False)

    @property
    def nothing(self) -> bool:
        """No permission at all (no role of the token is known, or its roles are empty)."""
        return not (self.submit or self.subscribe or self.manage) and self.read == "none"

    def may_submit(self, message_type: str) -> bool:
        answer = self._submit_answers.get(message_type)
        if answer is None:
            answer = any(fnmatchcase(message_type, pattern) for pattern in self.submit)
            if len(self._submit_answers) < _REMEMBERED:
                self._submit_answers[message_type] = answer
        return answer

    def may_subscribe(self, topic: str) -> bool:
        return any(fnmatchcase(topic, pattern) for pattern in self.subscribe)

    def may_subscribe_pattern(self, pattern: str) -> bool:
        """Whether every topic ``pattern`` can match is granted.

        Matching a requested pattern against a grant as if it were a topic is unsound (``a*c``
        "matches" the grant ``a?c`` but selects ``abbc``), so a wildcard pattern must equal a
        grant, or keep the fixed part of a ``prefix*`` or ``*suffix`` grant.
        """
        if not _WILDCARD.search(pattern):
            return self.may_subscribe(pattern)
        for grant in self.subscribe:
            if grant == "*" or grant == pattern:
                return True
            head, tail = grant[:-1], grant[1:]
            if grant.endswith("*") and not _WILDCARD.search(head) and pattern.startswith(head):
                return True
            if grant.startswith("*") and not _WILDCARD.search(tail) and pattern.endswith(tail):
                return True
        return False

    def may_manage(self, resource: str) -> bool:
        return resource in self.manage

    def manage_scope(self, resource: str) -> ManageScope | None:
        """``any`` or ``own`` for a managed resource (shared ones are always ``any``)."""
        if resource not in self.manage:
            return None
        if resource not in OWNED:
            return "any"
        return dict(self.manage_scopes).get(resource, "own")

    def may_manage_item(self, resource: str, subject: str, owner: str | None) -> bool:
        """Whether ``subject`` may manage an item of ``resource`` that ``owner`` made."""
        scope = self.manage_scope(resource)
        return scope == "any" or (scope == "own" and owner == subject)

    def may_read(self, subject: str, owner: str | None) -> bool:
        """Whether ``subject`` may read a message ``owner`` submitted."""
        return self.read == "any" or (self.read == "own" and owner == subject)

    def may_link(self, subject: str, owner: str | None, message_type: str | None) -> bool:
        """Whether ``subject`` may name a message as a cause or correlation: one it may read,
        or one whose events it may subscribe to (it receives them anyway)."""
        return self.may_read(subject, owner) or (message_type is not None and any(
            self.may_subscribe(f"{message_type}.{outcome}") for outcome in OUTCOMES))


def load_policy(path: str | None) -> Policy:
    """Read and validate a policy file; a broken one stops start-up with the reason."""
    source = Path(path) if path else None
    try:
        text = source.read_text() if source else \
            files("integration.security").joinpath("default_policy.yaml").read_text()
        data = json.loads(text) if source and source.suffix == ".json" else yaml.safe_load(text)
        return Policy.model_validate(data or {})
    except (OSError, ValueError, yaml.YAMLError, ValidationError) as exc:
        raise ConfigurationError(
            f"INTEGRATION_POLICY_FILE {path or '(default)'} is not a valid policy: "
            f"{file_problem(exc)}"
        ) from None

"""The gateway's per-app collaborators, kept in ``app.extensions["integration"]``."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from flask import Flask, current_app

from integration.app import build_guards, build_submitter, default_registry
from integration.broker.publisher import Publisher
from integration.broker.submission import Submitter
from integration.events.webhooks import Webhooks
from integration.messages.registry import Registry
from integration.messages.retry import idempotency_ttl
from integration.schedules.store import Schedules
from integration.security.policy import Policy, load_policy
from integration.security.revocations import Revocations
from integration.security.secrets import refuse_weak_secrets
from integration.security.signin import SignInLinks
from integration.security.verification import TokenVerification, token_verification
from integration.settings import Settings
from integration.store.idempotency import IdempotencyKeys
from integration.store.records import StatusStore
from integration.worker.deadletters import DeadLetters
from integration.worker.guards import Guards
from integration.worker.recovery import check_durations

EXTENSION_KEY = "integration"


@dataclass
class Runtime:
    settings: Settings
    submitter: Submitter
    policy: Policy
    verification: TokenVerification
    revocations: Revocations
    guards: Guards

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        # Configuration errors first: they stop start-up with the variable to change.
        verification = token_verification(settings)
        refuse_weak_secrets(settings)
        policy = load_policy(settings.policy_file)
        check_durations(settings, default_registry())
        submitter = build_submitter(settings, origin="gateway",
                                    coalesce=settings.submit_coalesce_messages,
                                    replica_wait=True)
        revocations = Revocations(submitter.store.client, settings.key_prefix,
                                  settings.service_token_max_ttl_seconds,
                                  settings.revocation_check_interval_seconds)
        guards = build_guards(settings, submitter.store.client)
        return cls(settings, submitter, policy, verification, revocations, guards)

    @property
    def registry(self) -> Registry:
        return self.submitter.registry

    @property
    def store(self) -> StatusStore:
        return self.submitter.store

    @property
    def publisher(self) -> Publisher:
        return self.submitter.publisher

    @cached_property
    def idempotency(self) -> IdempotencyKeys:
        return IdempotencyKeys(self.store.client, self.settings.key_prefix,
                               idempotency_ttl(self.settings))

    @property
    def dead_letters(self) -> DeadLetters:
        return DeadLetters(self.store, self.publisher)

    @property
    def sign_in_links(self) -> SignInLinks:
        return SignInLinks(self.store.client, self.settings.key_prefix)

    @cached_property
    def webhooks(self) -> Webhooks:
        return Webhooks(self.store.client, self.settings.key_prefix,
                        disable_after=self.settings.webhook_disable_after)

    @cached_property
    def schedules(self) -> Schedules:
        return Schedules.from_settings(self.settings, self.submitter.parse)

    def egress_refusal(self, url: str) -> str | None:
        """Why a URL may not be called (scheme, address policy, unresolvable), or None."""
        from integration.security.egress_policy import (
            EgressPolicy,
            EgressRefused,
            EgressUnavailable,
        )

        try:
            EgressPolicy.from_settings(self.settings).check(url)
        except EgressRefused as exc:
            return str(exc)
        except EgressUnavailable as exc:
            return f"the host cannot be resolved ({exc})"
        return None

    def init_app(self, app: Flask) -> None:
        app.extensions[EXTENSION_KEY] = self


def runtime() -> Runtime:
    return current_app.extensions[EXTENSION_KEY]

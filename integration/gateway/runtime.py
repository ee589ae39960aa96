"""The gateway's per-app collaborators, kept in ``app.extensions["integration"]``."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, current_app

from integration.publisher import Publisher
from integration.registry import Registry
from integration.services import build_submitter
from integration.settings import Settings
from integration.store import StatusStore
from integration.submission import Submitter

EXTENSION_KEY = "integration"


@dataclass
class Runtime:
    settings: Settings
    submitter: Submitter

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        return cls(settings, build_submitter(settings, origin="gateway"))

    @property
    def registry(self) -> Registry:
        return self.submitter.registry

    @property
    def store(self) -> StatusStore:
        return self.submitter.store

    @property
    def publisher(self) -> Publisher:
        return self.submitter.publisher

    def init_app(self, app: Flask) -> None:
        app.extensions[EXTENSION_KEY] = self


def runtime() -> Runtime:
    return current_app.extensions[EXTENSION_KEY]

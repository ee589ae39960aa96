"""A burst of submissions in a background thread, recording each answer by message id, and a
worker that is started again whenever it exits (as a supervisor would)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from integration.messages.ownership import scoped
from tests.conftest import WorkerProcess


@dataclass(frozen=True)
class Answer:
    status: int
    started: float  # time.monotonic() when the request was sent
    ended: float  # ... and when its answer came
    #: A 503 saying the broker stopped answering mid-enqueue: the message may have been.
    in_doubt: bool = False


class Burst(threading.Thread):
    """Submits ``count`` messages (or until ``stop``), ``pause`` apart: ``make(i)`` builds each
    one (``test.flaky`` with its id as effect key by default); the id is set here."""

    def __init__(self, client: Any, auth: dict[str, str], count: int | None, pause: float,
                 source: str, make: Callable[[int], dict[str, Any]] | None = None,
                 owner: str = "tester") -> None:
        super().__init__(daemon=True)
        self.owner = owner
        self.client, self.auth = client, auth
        self.count, self.pause, self.source = count, pause, source
        self.make = make
        self.answers: dict[str, Answer] = {}
        self._stopped = threading.Event()

    @property
    def outcomes(self) -> dict[str, int]:
        return {key: answer.status for key, answer in list(self.answers.items())}

    def accepted(self) -> list[str]:
        """The message ids answered 202 (the ids given, in their owner's namespace)."""
        return [scoped(self.owner, key) for key, answer in list(self.answers.items())
                if answer.status == 202]

    def in_doubt(self) -> list[str]:
        return [scoped(self.owner, key) for key, answer in list(self.answers.items())
                if answer.in_doubt]

    def stop(self) -> None:
        self._stopped.set()
        self.join(30)

    def run(self) -> None:
        index = 0
        while (self.count is None or index < self.count) and not self._stopped.is_set():
            key = uuid.uuid4().hex[:12]
            body = (self.make(index) if self.make else
                    {"type": "test.flaky", "source": self.source, "data": {"key": key}})
            started = time.monotonic()
            response = self.client.post("/api/v1/messages", headers=self.auth,
                                        json={**body, "id": key})
            doubt = response.status_code == 503 and \
                (response.get_json(silent=True) or {}).get("enqueued") == "unknown"
            self.answers[key] = Answer(response.status_code, started, time.monotonic(), doubt)
            index += 1
            time.sleep(self.pause)


class SupervisedWorker:
    """A worker started again whenever it exits, as compose's restart policy, systemd or
    ``integration up`` would: Celery may exit on a lost broker connection (celery #9250)."""

    def __init__(self, queues: list[str], directory: Path, env: dict[str, str]) -> None:
        self.queues, self.directory, self.env = queues, directory, env
        self.restarts = 0
        self.current = WorkerProcess(queues, directory / "worker-0.log", env=env)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stopped.wait(0.2):
            if self.current.process.poll() is None:
                continue
            self.current.stop()
            self.restarts += 1
            try:
                self.current = WorkerProcess(
                    self.queues, self.directory / f"worker-{self.restarts}.log", env=self.env)
            except AssertionError:
                continue  # exited while starting (the broker still down): started again

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace")
                       for p in sorted(self.directory.glob("worker-*.log")))

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(70)
        self.current.stop()

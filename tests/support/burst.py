"""A burst of submissions in a background thread, recording each answer's status by id."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any


class Burst(threading.Thread):
    """Submits ``count`` ``test.flaky`` messages (id = effect key), ``pause`` apart."""

    def __init__(self, client: Any, auth: dict[str, str], count: int, pause: float,
                 source: str) -> None:
        super().__init__(daemon=True)
        self.client, self.auth = client, auth
        self.count, self.pause, self.source = count, pause, source
        self.outcomes: dict[str, int] = {}

    def run(self) -> None:
        for _ in range(self.count):
            key = uuid.uuid4().hex[:12]
            response = self.client.post("/api/v1/messages", headers=self.auth, json={
                "id": key, "type": "test.flaky", "source": self.source, "data": {"key": key}})
            self.outcomes[key] = response.status_code
            time.sleep(self.pause)

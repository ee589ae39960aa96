"""A plain ``logging.Handler`` for ``INTEGRATION_LOG_HANDLERS`` in the processes a test starts:
every record it receives, one JSON object a line, appended to the file ``TEST_LOG_RECORDS``
names (each process and pool child appends its own lines)."""

from __future__ import annotations

import json
import logging
import os
from typing import Any


class RecordFile(logging.Handler):
    """Keeps each record's attributes and message, as a logging integration would see them."""

    def __init__(self) -> None:
        super().__init__()
        self.path = os.environ["TEST_LOG_RECORDS"]

    def emit(self, record: logging.LogRecord) -> None:
        fields: dict[str, Any] = {key: value for key, value in vars(record).items()
                                  if key not in ("args", "msg", "exc_info")}
        fields["message"] = record.getMessage()
        with open(self.path, "a", encoding="utf-8") as file:
            file.write(json.dumps(fields, default=repr) + "\n")

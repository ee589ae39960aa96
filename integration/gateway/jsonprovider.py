"""Flask's JSON answers written by orjson, which is much faster than the standard library on
the large answers of batches."""

from __future__ import annotations

from typing import Any

import orjson
from flask.json.provider import DefaultJSONProvider

#: Dates go to Flask's own ``default`` (HTTP dates), as they did; ``str`` subclasses, enums,
#: dataclasses and UUIDs orjson writes as ``json`` with Flask's ``default`` would.
_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS


class FastJSONProvider(DefaultJSONProvider):
    """Compact answers (Flask's default outside debug mode) by orjson, keys in insertion
    order; indented answers, and anything orjson refuses (an integer past 64 bits), by
    Flask's provider. Non-ASCII characters are written as UTF-8 rather than escaped."""

    sort_keys = False

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        if not kwargs or kwargs == {"separators": (",", ":")}:
            try:
                return orjson.dumps(obj, default=self.default, option=_OPTIONS).decode()
            except TypeError:
                pass
        return super().dumps(obj, **kwargs)

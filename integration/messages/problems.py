"""RFC 9457 problem documents: the one shape of every error the service returns.

Exception hierarchy::

    Problem                      (status on the class, rendered by the gateway)
     ├── BadRequest          400  body is not JSON
     ├── Unauthorized        401  missing or invalid token
     ├── Forbidden           403  the token's roles do not grant the permission
     ├── NotFound            404
     ├── Conflict            409  a message with this id exists
     ├── PayloadTooLarge     413  body or batch over its limit
     ├── UnsupportedMedia    415  not application/json
     ├── InvalidMessage      422  envelope or payload fails validation
     ├── TooManyRequests     429  over the rate limit (with Retry-After)
     └── Unavailable         503  broker or store unreachable (with Retry-After)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

from pydantic import ValidationError

PROBLEM_CONTENT_TYPE = "application/problem+json"
#: Problem types are relative URI references, documented in the README's error table.
TYPE_BASE = "/problems/"
#: The detail of a 500: what failed is in the log, never in the answer.
UNEXPECTED = "An unexpected error occurred; it has been logged."


class Problem(Exception):
    """An error with an HTTP status, rendered as ``application/problem+json``."""

    status: ClassVar[int] = 500
    slug: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal error"

    def __init__(self, detail: str | None = None, **extensions: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.extensions = extensions

    @property
    def headers(self) -> dict[str, str]:
        return {}

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "type": TYPE_BASE + self.slug,
            "title": self.title,
            "status": self.status,
        }
        if self.detail:
            document["detail"] = self.detail
        document.update(self.extensions)
        return document


class BadRequest(Problem):
    """The body could not be parsed as JSON."""

    status = 400
    slug = "malformed-json"
    title = "Malformed JSON"


class Unauthorized(Problem):
    """No valid bearer token."""

    status = 401
    slug = "unauthorized"
    title = "Unauthorized"

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="integration"'}


class Forbidden(Problem):
    """Authenticated, but the token's roles do not grant ``permission``."""

    status = 403
    slug = "forbidden"
    title = "Forbidden"

    def __init__(self, permission: str, detail: str | None = None) -> None:
        super().__init__(detail or f"Your roles do not grant {permission!r}.",
                         permission=permission)


class RetryLater(Problem):
    """A refusal that clears with time; ``Retry-After`` says when to come back."""

    def __init__(self, detail: str | None = None, retry_after: int = 5, **extensions: Any):
        super().__init__(detail, **extensions)
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class TooManyRequests(RetryLater):
    """Over the rate limit."""

    status = 429
    slug = "too-many-requests"
    title = "Too many requests"


class NotFound(Problem):
    """No such resource (or not one the caller may see)."""

    status = 404
    slug = "not-found"
    title = "Not found"


class Conflict(Problem):
    """The request conflicts with a message that already exists."""

    status = 409
    slug = "conflict"
    title = "Conflict"


class PayloadTooLarge(Problem):
    """The body or the batch exceeds its configured limit."""

    status = 413
    slug = "payload-too-large"
    title = "Payload too large"


class UnsupportedMedia(Problem):
    """The body is not JSON."""

    status = 415
    slug = "unsupported-media-type"
    title = "Unsupported media type"


class InvalidMessage(Problem):
    """The envelope or the payload of its type is invalid; ``errors`` says where and why."""

    status = 422
    slug = "invalid-message"
    title = "Invalid message"


class Unavailable(RetryLater):
    """A dependency (broker or store) is unreachable or a queue is full."""

    status = 503
    slug = "service-unavailable"
    title = "Service unavailable"


#: An absolute file path in an exception's text (``'/srv/app/data.json'``), and not the path
#: of a URL, which follows its host (``http://host/a/b``) or another slash.
_FILE_PATH = re.compile(r"(?<![\w.:/@%-])/(?:[\w.@+~-]+/)+[\w.@+~-]*")
#: How much of an exception's text an answer keeps.
MAX_ERROR_MESSAGE = 1000


def error_message(exc: BaseException) -> str:
    """An exception's text as answers and events carry it: absolute file paths, which say
    how the service is installed, become ``[path]`` (the log has the full text)."""
    return _FILE_PATH.sub("[path]", str(exc))[:MAX_ERROR_MESSAGE]


def validation_errors(
    error: ValidationError, prefix: Iterable[str | int] = ()
) -> list[dict[str, Any]]:
    """Each error's location and message, without echoing the submitted value back."""
    head = list(prefix)
    return [
        {"loc": head + list(item["loc"]), "msg": item["msg"], "type": item["type"]}
        for item in error.errors(include_url=False, include_input=False, include_context=False)
    ]


def invalid(errors: Sequence[Mapping[str, Any]], detail: str) -> InvalidMessage:
    return InvalidMessage(detail, errors=list(errors))

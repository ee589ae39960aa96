"""Configuration mistakes explained: for each exception a mistake raises (an invalid setting,
an unreachable Redis, a wrong password, an unreadable file, a missing type module, a port in
use), one line that names the cause and the fix. The CLI, the worker and beat print that line
instead of a traceback; an exception not listed here is a bug and keeps its traceback."""

from __future__ import annotations

import errno
import re
from typing import TYPE_CHECKING, Any

from integration.settings import ConfigurationError, Settings

if TYPE_CHECKING:
    from pydantic import ValidationError


def hide_password(url: str) -> str:
    """``url`` (with or without a scheme) as a message may show it: its password ``***``."""
    scheme, sep, rest = url.partition("://")
    prefix = scheme + sep if sep else ""
    rest = rest if sep else url
    userinfo, at, host = rest.rpartition("@")
    if not at:
        return url
    user, colon, _ = userinfo.partition(":")
    # Without a colon the one word may be a password (``redis://secret@host``): hide it all.
    return f"{prefix}{user}:***@{host}" if colon else f"{prefix}***@{host}"


#: ``scheme://user:password@`` inside a longer text (a library's message).
_URL_PASSWORD = re.compile(r"(\w[\w+.-]*://[^:/@\s]*:)[^@\s]*@")


def one_line(text: str) -> str:
    """``text`` on one line, passwords of URLs in it hidden."""
    return _URL_PASSWORD.sub(r"\1***@", " ".join(str(text).split()))


def address(url: str) -> str:
    """The ``host:port`` (or socket path) a Redis or broker URL points at."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        if parts.scheme == "unix":
            return parts.path
        default = 5672 if parts.scheme.startswith(("amqp", "pyamqp")) else 6379
        return f"{parts.hostname or 'localhost'}:{parts.port or default}"
    except ValueError:
        return hide_password(url)


def file_problem(exc: BaseException) -> str:
    """Why a file could not be loaded, on one line: the OS's reason, the YAML error and its
    place, or the first schema errors."""
    import yaml
    from pydantic import ValidationError

    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        return f"not valid YAML: {exc.problem or exc.context}{where}"
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}"
                         for e in exc.errors(include_url=False))
    return one_line(str(exc))


def setting_problem(error: Any, prefix: str = "invalid setting ") -> str:
    """One error of the settings' validation: the variable, what is wrong, and the value
    (never a secret's, nor a URL's password)."""
    name = str(error["loc"][0]) if error["loc"] else ""
    field = Settings.model_fields.get(name)
    alias = field.validation_alias if field else None
    variable = alias if isinstance(alias, str) else f"INTEGRATION_{name.upper()}"
    message = str(error["msg"]).removeprefix("Value error, ")
    if message.startswith(variable):  # our own validators name the variable and the fix
        return one_line(message)
    secret = field is not None and "SecretStr" in str(field.annotation)
    value = error.get("input")
    shown = "" if secret or not isinstance(value, str | int | float) \
        else f" (got {hide_password(str(value))!r})"
    return one_line(f"{prefix}{variable}: {message}{shown}")


def settings_problem(exc: ValidationError) -> str:
    """The first problem of the settings (``integration check`` lists them all)."""
    errors = exc.errors(include_url=False)
    more = f" (and {len(errors) - 1} more: `integration check` lists them)" \
        if len(errors) > 1 else ""
    return setting_problem(errors[0]) + more


def explain(exc: BaseException, settings: Settings | None = None) -> str | None:
    """The one line for an exception a configuration mistake raises, or None (a bug, whose
    traceback is wanted). ``settings`` name the Redis a connection error is about."""
    import redis
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        if exc.title in {Settings.__name__, *(c.__name__ for c in Settings.__subclasses__())}:
            return settings_problem(exc)
        return None
    if isinstance(exc, ConfigurationError):
        return one_line(str(exc))
    if isinstance(exc, redis.AuthenticationError | redis.exceptions.AuthorizationError):
        return redis_refused(exc, settings)
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return redis_unreachable(exc, settings)
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return f"an address is in use ({one_line(str(exc))}): stop what listens there, or " \
               "choose another port (INTEGRATION_PORT, INTEGRATION_GATEWAY_METRICS_PORT, " \
               "INTEGRATION_METRICS_PORT)"
    return None


def redis_refused(exc: BaseException, settings: Settings | None, *,
                  variable: str = "INTEGRATION_REDIS_URL", url: str | None = None) -> str:
    """A Redis that answered but refused the credentials of the URL in ``variable``."""
    where = _where(settings, url)
    reason = one_line(str(exc)).rstrip(".")
    return (f"{where} refused the credentials of {variable} ({reason}): write its password "
            f"as redis://:PASSWORD@host:port/0 (or redis://USER:PASSWORD@… for an ACL user)")


def redis_unreachable(exc: BaseException, settings: Settings | None, *,
                      variable: str = "INTEGRATION_REDIS_URL", url: str | None = None) -> str:
    """A Redis that does not answer: down, or the URL in ``variable`` points elsewhere."""
    where = _where(settings, url)
    reason = one_line(str(exc)).rstrip(".")
    return f"cannot reach {where} ({reason}): start it, or point {variable} at a Redis that runs"


def _where(settings: Settings | None, url: str | None) -> str:
    url = url or (settings.redis_url if settings is not None else None)
    return f"Redis at {address(url)}" if url else "Redis"

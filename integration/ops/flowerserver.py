"""``integration flower``: Flower on the workers' Celery app, never without a login, and with its
``/metrics`` behind that login (Flower serves it to anyone otherwise)."""

from __future__ import annotations

from collections.abc import Sequence

from integration.security.secrets import GENERATE, secret_weakness
from integration.settings import ConfigurationError, Settings

#: Flower's own option for its login (``user:password``, several separated by commas).
LOGIN_OPTIONS = ("--basic-auth", "--basic_auth")


def login_of(argv: Sequence[str], settings: Settings) -> str | None:
    """The login Flower will use: its ``--basic-auth`` option, else ``FLOWER_BASIC_AUTH``."""
    for index, word in enumerate(argv):
        name, equals, value = word.partition("=")
        if name in LOGIN_OPTIONS:
            return value if equals else (argv[index + 1] if index + 1 < len(argv) else "")
    if settings.flower_basic_auth is not None:
        return settings.flower_basic_auth.get_secret_value()
    return None


def check_login(argv: Sequence[str], settings: Settings) -> list[str]:
    """``ConfigurationError`` without a login, or in production with a weak password;
    the weaknesses development accepts, to warn about."""
    login = login_of(argv, settings)
    if not login:
        raise ConfigurationError(
            "Flower needs a login (its API can revoke tasks and shut workers down): set "
            f"FLOWER_BASIC_AUTH=user:password, the password from {GENERATE}, or pass "
            "--basic-auth=user:password.")
    weak = [f"the password in Flower's login {reason}; generate one with {GENERATE}"
            for entry in login.split(",")
            if (reason := secret_weakness(entry.partition(":")[2] or entry))]
    if weak and settings.env == "production":
        raise ConfigurationError("Production refuses " + "; ".join(weak) + ".")
    return weak


def metrics_behind_login() -> None:
    """Serve Flower's ``/metrics`` only to a request with the login, as its other pages.

    Flower registers ``/metrics`` without its ``authenticated`` check; the handler in its
    routing table (read when its application is built) is replaced by one with the check.
    ``tests/functional/test_flower.py`` fails should a release move or rename it.
    """
    from flower import urls
    from flower.views.monitor import Metrics
    from tornado import web

    class LoginMetrics(Metrics):
        @web.authenticated
        async def get(self) -> None:
            await super().get()

    for index, handler in enumerate(urls.handlers):
        if isinstance(handler, tuple) and handler[1] is Metrics:
            urls.handlers[index] = (handler[0], LoginMetrics, *handler[2:])
            return
    raise RuntimeError("Flower's /metrics handler was not found; its routing changed")


def run_flower(argv: Sequence[str]) -> None:
    """``celery -A tasks flower ARGV`` with ``/metrics`` behind the login (does not return)."""
    from celery.bin.celery import celery

    try:
        import flower  # noqa: F401 - an extra: pip install 'integration-bus[flower]'
    except ImportError:
        raise SystemExit("Flower is not installed: pip install 'integration-bus[flower]'") \
            from None
    metrics_behind_login()
    celery.main(["-A", "tasks", "flower", *argv], prog_name="celery")

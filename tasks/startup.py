"""Start-up of workers and beat: a configuration mistake is one line naming the cause and the
fix, then exit status 1, never a traceback (``integration.mistakes`` words the line); an
unreachable broker is one line per outage while the worker keeps retrying."""

from __future__ import annotations

import logging
import sys
from typing import Any, NoReturn

from celery.loaders.app import AppLoader
from celery.signals import celeryd_init

from integration.app import get_settings, ping_store
from integration.mistakes import address, explain, one_line
from integration.settings import ConfigurationError, Settings


def stop(line: str) -> NoReturn:
    """Say ``line`` on stderr (logging may not be set up yet) and exit 1."""
    print(f"Error: {line}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def _settings_or_none() -> Settings | None:
    try:
        return get_settings()
    except Exception:  # noqa: BLE001 - the caller explains the settings' own error
        return None


class Loader(AppLoader):
    """Celery's loader of ``celeryconfig``, which reads the settings and the message types:
    a mistake there stops ``celery -A tasks …`` with its line (Celery would print the
    traceback of the import)."""

    def config_from_object(self, obj: Any, silent: bool = False) -> Any:
        try:
            return super().config_from_object(obj, silent)
        except Exception as exc:
            line = explain(exc, _settings_or_none())
            if line is None:
                raise
            stop(line)


@celeryd_init.connect
def check_before_start(**_: Any) -> None:
    """Before the worker starts its pool: the store's Redis accepts the credentials of its
    URL, and the policy and rules files load. An unreachable Redis is left to the broker
    connection's retries (an outage the worker rides out); a wrong password or a broken
    file is not, so the worker stops with the reason."""
    import redis

    from integration.loop.rules import load_rules
    from integration.security.policy import load_policy

    settings = get_settings()
    try:
        load_policy(settings.policy_file)
        load_rules(settings.rules_file)
    except ConfigurationError as exc:
        stop(one_line(str(exc)))
    try:
        ping_store(settings)
    except redis.AuthenticationError as exc:
        stop(explain(exc, settings) or str(exc))
    except redis.RedisError:
        pass  # the consumer's connection says it, once, and retries


class OutageLine(logging.Filter):
    """Celery's "Cannot connect to <url>: <reason>. Trying again in N seconds..." comes once
    per attempt and names no setting: it becomes one line per outage that names the address
    and the variable to check; the retries go on quietly until "Connected to"."""

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.variable = "INTEGRATION_BROKER_URL" if settings.broker_url else \
            "INTEGRATION_REDIS_URL"
        self.address = address(settings.broker)
        self.reported = False

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        if text.startswith("Connected to"):
            self.reported = False
            return True
        if not text.startswith("consumer: Cannot connect to"):
            return True
        if self.reported:
            return False
        self.reported = True
        args = record.args if isinstance(record.args, tuple) else ()
        reason = one_line(str(args[1])).rstrip(".") if len(args) > 1 else "no answer"
        record.msg = (f"cannot reach the broker at {self.address} ({reason}): start it, or "
                      f"point {self.variable} at one that runs; retrying until it answers")
        record.args = ()
        record.exc_info = None
        return True


def quiet_retries(settings: Settings) -> None:
    """One line per broker outage (``OutageLine``) on the loggers of Celery's consumer."""
    outage = OutageLine(settings)
    for name in ("celery.worker.consumer.consumer", "celery.worker.consumer.connection"):
        logger = logging.getLogger(name)
        for existing in [f for f in logger.filters if isinstance(f, OutageLine)]:
            logger.removeFilter(existing)
        logger.addFilter(outage)

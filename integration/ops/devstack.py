"""``integration up``: the whole service on one machine, each process supervised (started
again when it exits), and recorded in the run directory so that every other command run from
the same folder talks to it (``integration.sources``).

Redis is embedded unless ``INTEGRATION_REDIS_URL`` is set; a development JWT secret is
generated (and kept in the run directory) unless ``INTEGRATION_JWT_SECRET`` is set.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import sys
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path

import redis

from integration import sources
from integration.ops.consolelink import console_link
from integration.ops.embedded_redis import EmbeddedRedis
from integration.ops.supervisor import Program, Supervisor, own_terminal
from integration.security.signin import SignInLinks
from integration.security.tokens import issue_token
from integration.settings import ConfigurationError, Settings

DEV_SUBJECT = "developer"
DEV_TOKEN_TTL = 24 * 3600
FLOWER_PORT = 5555
#: The body of the banner's ``curl`` line: the README's first message.
FIRST_MESSAGE = ('{"type": "metric", "source": "host-1", "data": {"name": "cpu", "value": 97.5, '
                 '"thresholds": {"warning": 80}}}')


def _dev_secret(run_dir: Path) -> Path:
    """The file of a development secret that survives restarts, so issued tokens keep working."""
    path = run_dir / sources.DEV_SECRET_FILE
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(48))
    return path


def _loopback(host: str) -> str:
    """The address a local client uses for a server bound to ``host``."""
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host  # noqa: S104 - a comparison


def check_ports(wanted: dict[str, tuple[str, int, str]]) -> None:
    """Refuse to start when a port is taken, naming it and the option that moves it.

    ``wanted`` maps a name to (address, port, how to choose another, with ``{port}``).
    """
    for name, (host, port, option) in wanted.items():
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError:
                pass
            else:
                continue
        raise ConfigurationError(
            f"cannot listen on {host}:{port} ({name}): the port is in use; stop what holds it, "
            "or choose another: " + option.format(port=_next_free(host, port)))


def stack_ports(settings: Settings, host: str, port: int, flower: bool,
                flower_port: int) -> dict[str, tuple[str, int, str]]:
    """The ports ``integration up`` will listen on, for ``check_ports``."""
    ports = {"the gateway": (host, port, "make run PORT={port} (INTEGRATION_PORT, or "
                                         "integration up --port {port})")}
    if settings.metrics_port:
        ports["worker metrics"] = (settings.metrics_host, settings.metrics_port,
                                   "make run METRICS_PORT={port} (INTEGRATION_METRICS_PORT)")
    if flower:
        ports["Flower"] = (host, flower_port,
                           "make run FLOWER_PORT={port} (integration up --flower-port {port})")
    return ports


def _next_free(host: str, port: int) -> int:
    for candidate in range(port + 1, min(port + 100, 65535)):
        with socket.socket() as probe, contextlib.suppress(OSError):
            probe.bind((host, candidate))
            return candidate
    return 0


def _commands(settings: Settings, host: str, port: int, beat: bool,
              flower: tuple[int, str] | None) -> dict[str, list[str]]:
    python = sys.executable
    commands = {
        "gateway": [python, "-m", "integration", "serve", "--host", host, "--port", str(port)],
        "worker": [python, "-m", "celery", "-A", "tasks", "worker", "--loglevel", "INFO",
                   "--concurrency", str(settings.worker_concurrency or 2),
                   # Task events from the start: Flower and `celery events` see every task.
                   # No gossip: the service does not use it, and Celery's restart of it after
                   # a lost Redis fails with a traceback (AttributeError on `connection_errors`).
                   "--hostname", "worker@%h", "--task-events", "--without-gossip"],
    }
    if beat:
        # The scheduler (redbeat, from celeryconfig) keeps schedules and state in Redis.
        commands["beat"] = [python, "-m", "celery", "-A", "tasks", "beat", "--loglevel", "INFO"]
    if flower:
        # Never unauthenticated: Flower's API can revoke tasks and shut workers down.
        flower_port, login = flower
        commands["flower"] = [python, "-m", "integration", "flower", f"--port={flower_port}",
                              f"--address={host}", f"--basic-auth={login}"]
    return commands


def banner(record: sources.StackRecord, token: str, flower_login: str | None = None,
           links: SignInLinks | None = None) -> str:
    base = record.gateway_url
    flower = ([f"  flower       {record.flower_url}  (login {flower_login})"]
              if record.flower_url else [])
    metrics = ([f"  worker metrics http://{_loopback(record.host)}:{record.metrics_port}/metrics"]
               if record.metrics_port else [])
    return "\n".join([
        "",
        f"  gateway      {base}",
        f"  API docs     {base}/docs",
        f"  console      {console_link(base, token, links)}",
        f"  readiness    {base}/readyz",
        f"  redis        {record.redis_url}",
        *flower,
        *metrics,
        "",
        f"  development token (subject {DEV_SUBJECT!r}, valid 24 h):",
        f"  {token}",
        "",
        "  try:",
        f"  curl -X POST {base}/api/v1/messages -H 'Authorization: Bearer {token}' "
        f"-H 'Content-Type: application/json' -d '{FIRST_MESSAGE}'",
        "",
        "  or watch the self-healing loop run:  integration demo",
        "  other commands in this folder use this stack (integration env prints it)",
        "",
        "  Ctrl-C stops everything.",
        "",
    ])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - our own loopback URL
            return True
    except OSError:
        return False


def _redis_answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _announce_when_serving(supervisor: Supervisor, url: str, text: Callable[[], str],
                           stopped: threading.Event) -> None:
    """Print the banner once the gateway answers, so its curl line works when it is read."""
    while not stopped.is_set():
        if _answers(url):
            supervisor.write(text() + "\n")
            return
        stopped.wait(0.2)


def _sign_in_links(redis_url: str, prefix: str) -> SignInLinks | None:
    """Single-use console links in the stack's Redis (None, and the token in the link, when
    it cannot be written)."""
    links = SignInLinks(redis.Redis.from_url(redis_url, socket_timeout=2), prefix)
    try:
        links.client.ping()
    except redis.RedisError:
        return None
    return links


def run_stack(settings: Settings, host: str, port: int, *, beat: bool = True,
              flower: bool = False, flower_port: int = FLOWER_PORT) -> int:
    run_dir = Path(settings.run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    running = sources.recorded_stack(run_dir)
    if running is not None:
        raise ConfigurationError(
            f"a stack already runs from this folder (process {running.pid}, gateway "
            f"{running.gateway_url}): use it, stop it, or start another with its own "
            "INTEGRATION_RUN_DIR")

    programs: list[Program] = []
    redis_url = settings.redis_url
    embedded = "redis_url" not in settings.model_fields_set
    if embedded:
        server = EmbeddedRedis(run_dir / "redis", persistent=True)
        redis_url = server.url
        programs.append(Program("redis", server.command(), cwd=str(run_dir),
                                ready=lambda: _redis_answers(redis_url), ready_timeout=15))
    secret_file = None if settings.jwt_secret else _dev_secret(run_dir)
    secret = (settings.jwt_secret.get_secret_value() if settings.jwt_secret
              else secret_file.read_text().strip() if secret_file else "")

    env = {k: v for k, v in os.environ.items() if k != "INTEGRATION_ENV_FILE"}
    # The children read the environment alone: what came from `.env` is passed on here.
    env.update({name: str(value) for name, value in sources.dotenv_values(
        sources.env_file(), exclude=sources.DEPLOYMENT_KEYS).items() if name not in env})
    env.update({
        "INTEGRATION_REDIS_URL": redis_url,
        "INTEGRATION_JWT_SECRET": secret,
        "INTEGRATION_ENV": "development",
        "INTEGRATION_ENV_FILE": "",
        "PYTHONUNBUFFERED": "1",
    })
    login = f"admin:{secrets.token_urlsafe(32)}" if flower else None
    local = _loopback(host)
    record = sources.StackRecord(
        pid=os.getpid(), gateway_url=f"http://{local}:{port}", host=local, port=port,
        redis_url=redis_url, redis_embedded=embedded, metrics_port=settings.metrics_port,
        flower_url=f"http://{local}:{flower_port}" if flower else None,
        console_url=f"http://{local}:{port}/console",
        jwt_secret_file=str(secret_file) if secret_file else None)
    programs += [Program(name, argv, env=env, cwd=str(Path.cwd()))
                 for name, argv in _commands(settings, host, port, beat,
                                             (flower_port, login) if login else None).items()]
    supervisor = Supervisor(programs)

    token = issue_token(secret, DEV_SUBJECT, ["admin"], DEV_TOKEN_TTL)
    stopped = threading.Event()
    threading.Thread(target=_announce_when_serving, daemon=True, name="banner", args=(
        supervisor, f"{record.gateway_url}/readyz",
        lambda: banner(record, token, login, _sign_in_links(redis_url, settings.key_prefix)),
        stopped,
    )).start()
    path = record.write(run_dir)
    try:
        with own_terminal():
            return supervisor.run()
    finally:
        stopped.set()
        with contextlib.suppress(OSError):
            if sources.recorded_stack(run_dir, live_only=False) == record:
                path.unlink()


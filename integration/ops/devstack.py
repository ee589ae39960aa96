"""``integration up``: the whole service on one machine, each process supervised (started
again when it exits).

Redis is embedded unless ``INTEGRATION_REDIS_URL`` is set; a development JWT secret is
generated (and kept in the run directory) unless ``INTEGRATION_JWT_SECRET`` is set.
"""

from __future__ import annotations

import os
import secrets
import sys
from contextlib import ExitStack
from pathlib import Path

from integration.ops.embedded_redis import EmbeddedRedis
from integration.ops.supervisor import Program, Supervisor
from integration.security.tokens import issue_token
from integration.settings import Settings

DEV_SUBJECT = "developer"
DEV_TOKEN_TTL = 24 * 3600


#: Where ``integration up`` keeps its development JWT secret, under the run directory.
DEV_SECRET_FILE = "jwt-secret"


def _dev_secret(run_dir: Path) -> str:
    """A development secret that survives restarts, so issued tokens keep working."""
    path = run_dir / DEV_SECRET_FILE
    if path.exists():
        return path.read_text().strip()
    secret = secrets.token_urlsafe(48)
    path.touch(mode=0o600)
    path.write_text(secret)
    return secret


FLOWER_PORT = 5555


def _commands(settings: Settings, host: str, port: int,
              beat: bool, flower_auth: str | None) -> dict[str, list[str]]:
    python = sys.executable
    commands = {
        "gateway": [python, "-m", "integration", "serve", "--host", host, "--port", str(port)],
        "worker": [python, "-m", "celery", "-A", "tasks", "worker", "--loglevel", "INFO",
                   "--concurrency", str(settings.worker_concurrency or 2),
                   # Task events from the start: Flower and `celery events` see every task.
                   "--hostname", "worker@%h", "--task-events"],
    }
    if beat:
        # The scheduler (redbeat, from celeryconfig) keeps schedules and state in Redis.
        commands["beat"] = [python, "-m", "celery", "-A", "tasks", "beat", "--loglevel", "INFO"]
    if flower_auth:
        # Never unauthenticated: Flower's API can revoke tasks and shut workers down.
        commands["flower"] = [python, "-m", "integration", "flower",
                              f"--port={FLOWER_PORT}", f"--address={host}",
                              f"--basic-auth={flower_auth}"]
    return commands


def banner(host: str, port: int, token: str, redis_url: str,
           flower_auth: str | None = None) -> str:
    base = f"http://{host}:{port}"
    flower = ([f"  flower       http://{host}:{FLOWER_PORT}  (login {flower_auth})"]
              if flower_auth else [])
    body = '{"type": "metric", "source": "host-1", "data": {"name": "cpu", "value": 97.5}}'
    return "\n".join([
        "",
        f"  gateway      {base}",
        f"  API docs     {base}/docs",
        f"  readiness    {base}/readyz",
        f"  redis        {redis_url}",
        *flower,
        "",
        f"  development token (subject {DEV_SUBJECT!r}, valid 24 h):",
        f"  {token}",
        "",
        "  try:",
        f"  curl -X POST {base}/api/v1/messages -H 'Authorization: Bearer {token}' "
        f"-H 'Content-Type: application/json' -d '{body}'",
        "",
        "  or watch the self-healing loop run:  integration demo",
        "",
        "  Ctrl-C stops everything.",
        "",
    ])


def run_stack(settings: Settings, host: str, port: int, *, beat: bool = True,
              flower: bool = False) -> int:
    run_dir = Path(settings.run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        redis_url = settings.redis_url
        if "redis_url" not in settings.model_fields_set:
            embedded = stack.enter_context(EmbeddedRedis(run_dir / "redis", persistent=True))
            redis_url = embedded.url
        secret = (settings.jwt_secret.get_secret_value() if settings.jwt_secret
                  else _dev_secret(run_dir))

        env = dict(os.environ)
        env.update({
            "INTEGRATION_REDIS_URL": redis_url,
            "INTEGRATION_JWT_SECRET": secret,
            "INTEGRATION_ENV": "development",
            "PYTHONUNBUFFERED": "1",
        })
        flower_auth = f"admin:{secrets.token_urlsafe(32)}" if flower else None
        supervisor = Supervisor([
            Program(name, argv, env=env, cwd=str(Path.cwd()))
            for name, argv in _commands(settings, host, port, beat, flower_auth).items()])

        token = issue_token(secret, DEV_SUBJECT, ["admin"], DEV_TOKEN_TTL)
        print(banner(host, port, token, redis_url, flower_auth), flush=True)
        return supervisor.run()
    return 0  # pragma: no cover - ExitStack does not swallow exceptions

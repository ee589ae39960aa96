"""``integration demo``: one metric through the whole self-healing loop, followed to its end."""

from __future__ import annotations

import json
from typing import Any

import click

from integration.app import get_settings
from integration.ops.terminal import (
    paint_status,
)
from integration.security.tokens import issue_token


def _walk(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for child in node.get("caused", []) for n in _walk(child))]


def _demo_token(settings: Any) -> str:
    """A short-lived admin token signed with the configured or the development secret."""
    from pathlib import Path

    from integration.sources import DEV_SECRET_FILE

    if settings.jwt_secret is not None:
        secret = settings.jwt_secret.get_secret_value()
    else:
        path = Path(settings.run_dir) / DEV_SECRET_FILE
        if not path.exists():
            raise click.ClickException(
                "no token: pass --token, set INTEGRATION_JWT_SECRET, or start `make run` "
                "(it writes the development secret) first")
        secret = path.read_text().strip()
    return issue_token(secret, "demo", ["admin"], 600)


@click.command()
@click.option("--url", help="Gateway base URL (default http://INTEGRATION_HOST:INTEGRATION_PORT).")
@click.option("--token", "token_text", envvar="INTEGRATION_TOKEN",
              help="Bearer token (default: a 10-minute admin token signed with the "
                   "configured or development secret).")
@click.option("--host", "host_label", default=None,
              help="The `host` label of the metric (the action's target); default: a new "
                   "demo-<random> host each run, so no alert of an earlier run is still firing.")
@click.option("--timeout", type=click.FloatRange(1), default=60, show_default=True,
              help="Seconds to wait for the loop to complete.")
def demo(url: str | None, token_text: str | None, host_label: str | None,
         timeout: float) -> None:
    """Run the self-healing loop once and follow it to its action.result.

    Sends a metric over the shipped HighCPU threshold; each step of the loop is printed as
    it completes, then the whole trace.

    \b
    Examples (with `make run` in another terminal):
      integration demo                        # a new demo host each run
      integration demo --url http://gateway:8000 --token "$TOKEN"

    Exit status: 0 when the loop completed, 1 when it did not within --timeout.
    """
    import secrets
    import time
    import urllib.error
    import urllib.request

    from integration.store.trace import render

    settings = get_settings()
    base = (url or f"http://{settings.host}:{settings.port}").rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise click.ClickException("--url must be an http:// or https:// URL")
    bearer = token_text or _demo_token(settings)
    chosen = host_label is not None
    host_label = host_label or f"demo-{secrets.token_hex(3)}"

    def call(method: str, path: str, body: Any = None) -> Any:
        request = urllib.request.Request(  # noqa: S310 - http(s) only, checked above
            base + path, method=method, data=json.dumps(body).encode() if body else None,
            headers={"Authorization": f"Bearer {bearer}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise click.ClickException(f"{method} {path}: {exc.code} {exc.read()[:300]!r}"
                                       ) from None
        except OSError as exc:
            raise click.ClickException(f"cannot reach the gateway at {base}: {exc}") from None

    metric = {"type": "metric", "source": "integration-demo",
              "data": {"name": "cpu_usage_percent", "value": 97.5,
                       "labels": {"host": host_label}}}
    message_id = call("POST", "/api/v1/messages", metric)["id"]
    click.echo(f"sent metric cpu_usage_percent=97.5 (host {host_label}): {message_id}")
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = call("GET", f"/api/v1/messages/{message_id}/trace")
        for node in _walk(found):
            key = f"{node['id']}:{node['status']}"
            if key not in seen and node["status"] in ("succeeded", "dead", "held"):
                seen.add(key)
                mark = click.style("✓", fg="green") if node["status"] == "succeeded" \
                    else click.style("✗", fg="red")
                click.echo(f"  {mark} {node['type']:<26} {node['status']:<9} {node['id']}")
        done = [n for n in _walk(found) if n["type"] == "action.result"
                and n["status"] == "succeeded"]
        if done:
            click.echo("\nthe loop completed; its trace:\n")
            click.echo("\n".join(render(found, paint=paint_status)))
            return
        time.sleep(0.5)
    click.echo("\n".join(render(found, paint=paint_status)))
    if chosen and not any(n["type"] == "alert" for n in _walk(found)):
        raise click.ClickException(
            f"no alert was raised for host {host_label} within {timeout:.0f} s: an alert for it "
            "may still be firing from an earlier run (alerts fire once until resolved); run "
            "without --host for a new one")
    raise click.ClickException(
        f"the loop did not reach action.result within {timeout:.0f} s (are workers running, "
        "and do the rules have the HighCPU threshold?)")

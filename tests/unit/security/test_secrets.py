"""The secrets production refuses, as ``weak_secrets`` finds them in the settings."""

from __future__ import annotations

import secrets

from integration.security.secrets import weak_secrets
from integration.settings import Settings


def test_every_node_of_a_multi_node_broker_url_has_its_password_judged() -> None:
    """A placeholder on the third node of ``amqp://a;amqp://b;amqp://c`` is found, once."""
    good = secrets.token_hex(32)
    nodes = [f"amqp://integration:{password}@rabbitmq-{i}:5672/integration"
             for i, password in enumerate((good, good, "changeme"), 1)]
    settings = Settings(jwt_secret=secrets.token_urlsafe(48), broker_url=";".join(nodes),
                        redis_url=f"redis://app:{good}@redis:6379/0")
    assert [w.variable for w in weak_secrets(settings)] == [
        "the password in INTEGRATION_BROKER_URL"]
    nodes[1] = nodes[1].replace(good, "changeme")
    assert len(weak_secrets(Settings(jwt_secret=secrets.token_urlsafe(48),
                                     broker_url=";".join(nodes),
                                     redis_url=f"redis://app:{good}@redis:6379/0"))) == 1

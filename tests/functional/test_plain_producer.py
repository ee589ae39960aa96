"""A producer with only Celery installed (the script the adapters page shows, run as it is in
a virtual environment of its own) reaches the right queue, and its task id is the message id."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.conftest import ROOT, wait_status

PAGE = ROOT / "docs" / "adapters.md"


def documented_script() -> str:
    section = PAGE.read_text().split("### With only Celery installed", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


@pytest.fixture(scope="session")
def celery_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment holding Celery (with its Redis transport) and nothing else."""
    venv = tmp_path_factory.mktemp("producer") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    f"celery[redis]=={version('celery')}"], check=True, timeout=300)
    assert subprocess.run([str(python), "-c", "import integration"], capture_output=True,
                          cwd="/", env={"PATH": "/usr/bin:/bin"}).returncode != 0, \
        "the producer must not see this project"
    return python


def test_a_producer_with_only_celery_reaches_the_types_queue(
    celery_only: Path, client: FlaskClient, auth: dict[str, str], worker: Any,
    test_environment: dict[str, str], tmp_path: Path
) -> None:
    script = tmp_path / "producer.py"
    script.write_text(documented_script())
    sent = subprocess.run([str(celery_only), str(script)], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path,
                          env={"BROKER_URL": test_environment["INTEGRATION_REDIS_URL"],
                               "PATH": "/usr/bin:/bin"})
    assert sent.returncode == 0, sent.stderr
    task_id = sent.stdout.strip()
    record = wait_status(client, auth, task_id)
    assert record["status"] == "succeeded"
    assert record["type"] == "alert" and record["queue"] == "alert"

"""Every long-running process is started again when it exits: compose's restart policies and
the documented systemd units (checked by ``systemd-analyze`` where it is installed)."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service"))


def test_every_compose_service_restarts() -> None:
    """A container that exits (a worker on a lost broker connection) is started again."""
    base = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    override = yaml.safe_load((ROOT / "docker-compose.rabbitmq.yml").read_text())["services"]
    added = {name: spec for name, spec in override.items() if name not in base}
    # The secrets check runs once before the others; it must exit, not be started again.
    once = {name for name, spec in base.items() if spec.get("restart") == "no"}
    assert once == {"secrets-check"}
    for service, spec in {**base, **added}.items():
        if service not in once:
            assert spec.get("restart") in ("unless-stopped", "always"), service


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_every_systemd_unit_restarts_and_stops_warm(unit: Path) -> None:
    """Restart=always, SIGTERM first (a worker's warm shutdown), a bounded stop."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment, method-assign]
    parser.read(unit)
    service = parser["Service"]
    assert service["Restart"] == "always"
    assert service["KillSignal"] == "SIGTERM" and int(service["TimeoutStopSec"]) > 0
    assert service["ExecStart"].startswith("/opt/integration/bin/")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_systemd_accepts_the_unit(unit: Path, tmp_path: Path) -> None:
    """``systemd-analyze verify`` finds nothing wrong but the programs missing on this host."""
    name = unit.name.replace("@.", "@metric.")
    (tmp_path / name).write_text(unit.read_text())
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(tmp_path / name)],
                            capture_output=True, text=True, timeout=60)
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if line.strip() and "is not executable" not in line
                and "/etc/integration/integration.env" not in line]
    assert not problems, problems

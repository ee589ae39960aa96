"""The Lua scripts: every part a script is joined from is a file that the package data ships,
and every file is a part of some script."""

from __future__ import annotations

import configparser
from fnmatch import fnmatch
from pathlib import Path

from integration.broker.redis_enqueue import ENQUEUE_SCRIPT
from integration.store.scripts import STORE_SCRIPTS, lua, store_script

ROOT = Path(__file__).resolve().parents[3]
#: Each package with scripts, and the parts its scripts are joined from.
PARTS = {
    "integration.store": {part for parts in STORE_SCRIPTS.values() for part in parts},
    "integration.broker": set(ENQUEUE_SCRIPT),
}


def package_data() -> dict[str, list[str]]:
    """``setup.cfg``'s ``[options.package_data]``: each package's globs."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    return {package: value.split() for package, value in
            config["options.package_data"].items()}


def test_every_script_part_is_a_file_the_package_ships() -> None:
    """Each referenced ``lua/<part>.lua`` exists and matches a package-data glob of its
    package, so an installed wheel has it."""
    shipped = package_data()
    for package, parts in PARTS.items():
        folder = ROOT.joinpath(*package.split("."))
        for part in sorted(parts):
            relative = f"lua/{part}.lua"
            assert (folder / relative).is_file(), f"{package}: {relative}"
            assert any(fnmatch(relative, glob) for glob in shipped.get(package, [])), \
                f"{package}: {relative} is not in [options.package_data]"


def test_every_script_file_is_referenced() -> None:
    """No ``.lua`` file lies unused beside the scripts."""
    for package, parts in PARTS.items():
        folder = ROOT.joinpath(*package.split("."), "lua")
        assert {p.stem for p in folder.glob("*.lua")} == parts, package


def test_scripts_are_joined_from_their_parts_in_order() -> None:
    """A script sharing a part starts with it, and every store script loads."""
    assert store_script("transition") == lua("integration.store", "move_index", "transition")
    assert store_script("finish").startswith(lua("integration.store", "move_index"))
    for name in STORE_SCRIPTS:
        assert "redis.call" in store_script(name), name

"""The Lua scripts: read from a package's ``lua/`` files, each joined from its named parts.

A script that shares a part with others (``move_index``) lists it first; nothing is written
twice. The files ship as package data (``setup.cfg``).
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

#: Each script the store registers, as the files of ``integration/store/lua/`` it is joined
#: from, in order.
STORE_SCRIPTS: dict[str, tuple[str, ...]] = {
    "create": ("create",),
    "discard": ("discard",),
    "transition": ("move_index", "transition"),
    "replay": ("replay",),
    "take_due": ("take_due",),
    "release_due": ("release_due",),
    "begin": ("move_index", "begin"),
    "finish": ("move_index", "finish"),
    "renew_claim": ("renew_claim",),
    "redeliver": ("redeliver",),
}


def lua(package: str, *parts: str) -> str:
    """The script joined from ``parts``, the files ``lua/<part>.lua`` of ``package``."""
    return "".join(_part(package, part) for part in parts)


def store_script(name: str) -> str:
    """One of the store's scripts (``STORE_SCRIPTS``)."""
    return lua("integration.store", *STORE_SCRIPTS[name])


@cache  # a file of the installed package: read once per process
def _part(package: str, part: str) -> str:
    return files(package).joinpath("lua", f"{part}.lua").read_text(encoding="utf-8")

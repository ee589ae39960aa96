"""The README and the docs: short, linked, and the configuration page current."""

from __future__ import annotations

import re
from pathlib import Path

from markdown.extensions.toc import slugify
from pydantic import Field
from pydantic_settings import BaseSettings

from tools.settings_reference import PAGE, entries, problems, render

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
#: A Markdown link or image: [text](target) with no spaces in the target.
LINK = re.compile(r"!?\[[^\]]*\]\((?P<target>[^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(?P<title>.+?)\s*$", re.MULTILINE)


def _local_links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.DOTALL)
    return [match["target"] for match in LINK.finditer(text)
            if not re.match(r"^[a-z][a-z0-9+.-]*:", match["target"])]


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.DOTALL)
    return {slugify(re.sub(r"[`*]", "", match["title"]), "-")
            for match in HEADING.finditer(text)}


def test_the_readme_fits_in_one_sitting() -> None:
    """The README is at most 300 lines; the rest is in docs/."""
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= 300, f"README.md has {lines} lines; move detail into docs/"


def test_every_link_of_the_readme_resolves() -> None:
    """Every relative link of the README names a file of the repository (and a heading of
    it, when it has an anchor)."""
    links = _local_links(README)
    assert any(link.startswith("docs/") for link in links)
    for link in links:
        path, _, anchor = link.partition("#")
        target = (ROOT / path) if path else README
        assert target.exists(), f"README.md links to {link}, which does not exist"
        if anchor and target.suffix == ".md":
            assert anchor in _anchors(target), f"README.md links to {link}: no such heading"


def test_the_configuration_page_is_what_the_settings_make() -> None:
    """docs/configuration.md is generated from Settings; `make docs` writes it again."""
    assert PAGE.read_text(encoding="utf-8") == render(), (
        "docs/configuration.md is not current: run `make docs` and commit it")


def test_every_setting_is_described_in_a_section() -> None:
    """Each field of Settings has a #: description and a section, so the page is complete."""
    assert problems(entries()) == []


def test_the_page_names_each_variable_with_type_default_and_description() -> None:
    """A field's row holds its variable (prefix or alias), type with bounds, and default."""

    class Example(BaseSettings):
        # -- the first section ------------------------------------------------------------
        #: How long something waits, in
        #: two lines with a ``literal`` and a | pipe.
        wait_seconds: float = Field(2.0, gt=0, le=60)
        #: Optional, read under another name.
        token: str | None = Field(None, validation_alias="OTHER_TOKEN")

        # -- the second: with a note after the colon ----------------------------------------
        #: A switch.
        enabled: bool = True

    rows = entries(Example)
    assert [(row.variable, row.type, row.default, row.section) for row in rows] == [
        ("INTEGRATION_WAIT_SECONDS", "number, > 0, ≤ 60", "`2`", "the first section"),
        ("OTHER_TOKEN", "string", "unset", "the first section"),
        ("INTEGRATION_ENABLED", "boolean", "`true`", "the second: with a note after the colon"),
    ]
    assert rows[0].description == "How long something waits, in two lines with a `literal` " \
                                  "and a \\| pipe."
    page = render(Example)
    assert "\n## The first section\n" in page and "\n## The second\n" in page


def test_a_setting_without_a_description_is_reported() -> None:
    """A field that lacks its #: comment stops the page from being generated."""

    class Undocumented(BaseSettings):
        # -- a section ---------------------------------------------------------------------
        silent: int = 1

    assert problems(entries(Undocumented), Undocumented) == ["silent: no #: description"]

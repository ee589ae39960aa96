"""The text of an error as answers carry it."""

from __future__ import annotations

import pytest

from integration.messages.problems import error_message


@pytest.mark.parametrize("text, shown", [
    ("[Errno 2] No such file or directory: '/srv/app/settings.json'",
     "[Errno 2] No such file or directory: '[path]'"),
    ("cannot read /etc/integration/rules.yaml: denied", "cannot read [path]: denied"),
    ("target 'x' (http://127.0.0.1:8080/restart/now) answered 503",
     "target 'x' (http://127.0.0.1:8080/restart/now) answered 503"),
])
def test_file_paths_leave_the_text_and_urls_stay(text: str, shown: str) -> None:
    """An absolute file path becomes [path]; a URL and its path stay as they are."""
    assert error_message(RuntimeError(text)) == shown

"""A value the deployment does not know is refused with the known ones and the closest."""

from __future__ import annotations

from integration.ops.params import unknown


def test_an_unknown_name_lists_the_known_and_suggests_the_closest() -> None:
    message = unknown("role", "admn", ["reader", "admin"], "the shipped policy")
    assert message == ("unknown role 'admn'; did you mean 'admin'? Known roles (the shipped "
                       "policy): admin, reader")


def test_nothing_close_is_suggested_when_nothing_is_close() -> None:
    assert unknown("message type", "bogus", ["metric", "alert"]) == (
        "unknown message type 'bogus'. Known message types: alert, metric")


def test_completion_offers_the_known_names() -> None:
    """Shell completion of --type and --role offers what the deployment defines."""
    from integration.ops.params import KnownName

    kind = KnownName("colour", "COLOUR", lambda: ["red", "green", "grey"])
    offered = kind.shell_complete(None, None, "gr")  # type: ignore[arg-type]
    assert [item.value for item in offered] == ["green", "grey"]

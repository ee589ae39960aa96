"""The bounded per-process memory behind the token and revocation caches."""

from integration.messages.memo import remember


def test_the_oldest_entry_goes_first_when_full() -> None:
    memory: dict[str, int] = {}
    for n in range(5):
        remember(memory, f"k{n}", n, limit=3)
    assert memory == {"k2": 2, "k3": 3, "k4": 4}


def test_replacing_a_key_when_full_keeps_the_limit() -> None:
    memory = {"a": 1, "b": 2}
    remember(memory, "b", 3, limit=2)
    assert len(memory) <= 2 and memory["b"] == 3

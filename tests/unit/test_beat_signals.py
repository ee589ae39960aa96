"""Beat moves a schedule on and sends its firing as one step for a stop signal."""

from __future__ import annotations

import os
import signal
from types import FrameType

import pytest

from integration.beat import _stop_signals_held


class Stopped(Exception):
    pass


def test_a_stop_signal_during_a_firing_takes_effect_after_the_send() -> None:
    steps: list[str] = []

    def stop(signum: int, frame: FrameType | None) -> None:
        steps.append("stopped")
        raise Stopped

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        with pytest.raises(Stopped), _stop_signals_held():
            steps.append("moved on")
            os.kill(os.getpid(), signal.SIGTERM)  # between moving on and sending
            steps.append("sent")
        assert steps == ["moved on", "sent", "stopped"]
        assert signal.SIGTERM not in signal.pthread_sigmask(signal.SIG_BLOCK, set())
    finally:
        signal.signal(signal.SIGTERM, previous)

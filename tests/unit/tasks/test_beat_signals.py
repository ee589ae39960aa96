"""Beat moves a schedule on and sends its firing as one step for a stop signal."""

from __future__ import annotations

import os
import signal
import threading
import time
from types import FrameType

import pytest

from tasks.beat import _stop_signals_held


class Stopped(Exception):
    pass


def _spin(until: threading.Event) -> None:
    while not until.is_set():
        time.sleep(0)


@pytest.mark.parametrize("other_thread", [False, True], ids=["alone", "beside-a-running-thread"])
def test_a_stop_signal_during_a_firing_takes_effect_after_the_send(other_thread: bool) -> None:
    # Beside another running thread the kernel may hand the signal to that thread; it must
    # still wait for the send (a signal mask on the firing thread alone did not).
    steps: list[str] = []

    def stop(signum: int, frame: FrameType | None) -> None:
        steps.append("stopped")
        raise Stopped

    done = threading.Event()
    spinner = threading.Thread(target=_spin, args=(done,), daemon=True)
    if other_thread:
        spinner.start()
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        with pytest.raises(Stopped), _stop_signals_held():
            steps.append("moved on")
            os.kill(os.getpid(), signal.SIGTERM)  # between moving on and sending
            time.sleep(0.05)  # time for any thread to take it
            steps.append("sent")
        assert steps == ["moved on", "sent", "stopped"]
        assert signal.getsignal(signal.SIGTERM) is stop
    finally:
        signal.signal(signal.SIGTERM, previous)
        done.set()


def test_no_stop_signal_means_nothing_is_delivered_afterwards() -> None:
    steps: list[str] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: steps.append("stopped"))
    try:
        with _stop_signals_held():
            steps.append("sent")
        assert steps == ["sent"]
    finally:
        signal.signal(signal.SIGTERM, previous)

"""Ctrl-C during training: files are never left half written, and the run says where it can
resume from.

A SIGINT that arrives while a checkpoint or an image is being written is held until the write
has finished (torch.save interrupted inside its zip writer fails with an "enforce fail" error
instead of cleaning up); anywhere else it raises KeyboardInterrupt as usual, which the loop
turns into TrainingInterrupted with the resume point.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the run; the message says where it can resume from."""


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Run the block to its end even if SIGINT arrives; deliver the SIGINT afterwards."""
    if threading.current_thread() is not threading.main_thread():  # signals go to the main thread only
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            if callable(previous):
                previous(signal.SIGINT, None)  # the default handler raises KeyboardInterrupt here
            elif previous == signal.SIG_DFL:
                raise KeyboardInterrupt

"""Progress of the stages inside a composed run (the build), for whoever shows it.

Stages take plain callbacks (``progress(n)``, ``progress(done, total)``, ``on_epoch``, ``on_batch``). The build
wraps each stage call in :func:`track`, which gives it a :class:`Tracker` for those callbacks; the tracker
reports to the listener installed with :func:`listen` (the CLI's bars and lines), or to nobody (a deployment
run, a library call), in which case tracking costs nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

# Updates this soon after a stage starts are work a resumed stage found already done (its completion
# records): they count as done but not as speed, so the time left is not underestimated after a resume.
_WARMUP_S = 1.0


class Tracker:
    """One stage's progress: ``done`` of ``total`` ``unit``; the time left is estimated from its rate so far."""

    def __init__(self, description: str, total: int | None, unit: str, clock: Callable[[], float] = time.monotonic):
        self.description, self.total, self.unit = description, total, unit
        self.done = 0
        self._clock = clock
        self.started = clock()
        self._base_t, self._base_done = self.started, 0  # the rate is measured from here

    def advance(self, n: int = 1) -> None:
        self.update(self.done + int(n))

    def update(self, done: int, total: int | None = None) -> None:
        if total is not None:
            self.total = int(total)
        self.done = int(done)
        now = self._clock()
        if now - self.started <= _WARMUP_S:
            self._base_t, self._base_done = now, self.done
        self.changed()

    def changed(self) -> None:
        """Called after every update; listeners override it."""

    @property
    def elapsed(self) -> float:
        return self._clock() - self.started

    def remaining(self) -> float | None:
        """Seconds left at the rate since the warm-up, or None while there is no rate (or no total) yet."""
        if self.total is None:
            return None
        worked, dt = self.done - self._base_done, self._clock() - self._base_t
        if worked <= 0 or dt <= 0:
            return None
        return max(0.0, (self.total - self.done) * dt / worked)


Listener = Callable[[str, "int | None", str], AbstractContextManager[Tracker]]
_listener: Listener | None = None


@contextmanager
def listen(listener: Listener) -> Iterator[None]:
    """Send every :func:`track` inside this block to ``listener(description, total, unit)``, a context manager
    that yields the stage's Tracker and closes the stage's display when the stage ends."""
    global _listener
    previous, _listener = _listener, listener
    try:
        yield
    finally:
        _listener = previous


@contextmanager
def track(description: str, total: int | None = None, unit: str = "") -> Iterator[Tracker]:
    """The Tracker of one stage; shown by the listener installed with :func:`listen`, if any."""
    if _listener is None:
        yield Tracker(description, total, unit)
        return
    with _listener(description, total, unit) as tracker:
        yield tracker


def clock(seconds: float | None) -> str:
    """``h:mm:ss`` (``m:ss`` under an hour); ``?`` for unknown."""
    if seconds is None:
        return "?"
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"

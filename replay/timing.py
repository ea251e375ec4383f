"""Replay time: durations and speeds on the command line, and the pacer that keeps to them.

>>> parse_duration("1h30m"), parse_duration("90s"), parse_duration("2.5m"), parse_duration("45")
(5400.0, 90.0, 150.0, 45.0)
>>> parse_speed("max") is None, parse_speed("10")
(True, 10.0)
"""

from __future__ import annotations

import re
import threading
import time
from typing import Final

from bedside.errors import BedsideError

_UNITS: Final = {"d": 86_400.0, "h": 3_600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_PART: Final = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|d|h|m|s)")


class TimingError(BedsideError, ValueError):
    """A duration or speed on the command line that cannot be read."""


def parse_duration(text: str) -> float:
    """Seconds in ``"90"``, ``"90s"``, ``"15m"``, ``"2h"``, ``"1d"``, ``"1h30m"`` or ``"250ms"``."""
    cleaned = text.strip().lower().replace(" ", "")
    try:
        seconds = float(cleaned)
    except ValueError:
        parts = _PART.findall(cleaned)
        if not parts or "".join(number + unit for number, unit in parts) != cleaned:
            raise TimingError(
                f"cannot read duration {text!r} (examples: 90s, 15m, 2h, 1h30m)"
            ) from None
        seconds = sum(float(number) * _UNITS[unit] for number, unit in parts)
    if not seconds >= 0 or seconds == float("inf"):
        raise TimingError(f"a duration must be finite and 0 or more, got {text!r}")
    return seconds


def parse_speed(text: str) -> float | None:
    """Replay speed: a factor of real time (``1``, ``10``, ``0.5``), or None for ``max``."""
    if text.strip().lower() == "max":
        return None
    try:
        speed = float(text)
    except ValueError:
        raise TimingError(f"speed must be a number or 'max', got {text!r}") from None
    if not 0 < speed < float("inf"):
        raise TimingError(f"speed must be positive, got {text!r}")
    return speed


class Pacer:
    """Holds each message back until its moment: ``elapsed / speed`` after the start.

    ``speed=None`` sends as fast as possible. :meth:`wait` returns False as soon as
    ``stop`` is set (Ctrl-C), even in the middle of a long wait. ``max_lag_s`` is how
    far behind schedule the replay fell at worst: near zero when it keeps up.
    """

    def __init__(self, speed: float | None, stop: threading.Event) -> None:
        self.speed = speed
        self.stop = stop
        self.origin = time.monotonic()
        self.max_lag_s = 0.0

    def restart(self) -> None:
        self.origin = time.monotonic()

    def wait(self, elapsed_s: float) -> bool:
        if self.speed is not None:
            delay = self.origin + elapsed_s / self.speed - time.monotonic()
            if delay > 0:
                return not self.stop.wait(delay)
            self.max_lag_s = max(self.max_lag_s, -delay)
        return not self.stop.is_set()

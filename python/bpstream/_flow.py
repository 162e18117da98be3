"""Flow control's Python face: the marks (FlowControl), the states (FlowState), flow
listener handles, and the health check (Health, Recommendation).

The states, their counters and the gating of puts live in the core (the stream's
``flow=``, ``stats()``, ``flow_state``, ``on_flow_change``); this module holds the values
the core reports and the one computation done in Python: ``BoundedStream.health()``.
"""

from __future__ import annotations

import enum
import math
from typing import Callable, NamedTuple

__all__ = ["FlowControl", "FlowState", "FlowListener", "Health", "Recommendation"]


class FlowState(enum.IntEnum):
    """Where a stream's fill (depth / capacity) stands against its flow marks."""

    NORMAL = 0
    """Below the throttle mark: puts are never delayed."""
    THROTTLED = 1
    """From the throttle mark up to the pause mark: a put that may wait is delayed."""
    PAUSED = 2
    """Above the pause mark, not full: a put that may wait waits for the fill to fall."""
    DROPPING = 3
    """Full: the overflow policy decides."""

    def __str__(self) -> str:  # "PAUSED", not IntEnum's "2": states are read by people
        return self.name

    def __format__(self, spec: str) -> str:
        return format(self.name, spec)


def _fraction(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{name} must be a number, not nan")
    return value


class FlowControl:
    """Watermark flow control for ``BoundedStream(..., flow=FlowControl(...))``.

    With fill = depth / capacity: NORMAL below ``throttle_at``; THROTTLED from
    ``throttle_at`` to ``pause_at`` (inclusive), where a put that may wait is delayed by
    ``min_delay + (max_delay - min_delay) * (fill - throttle_at) / (pause_at - throttle_at)``
    seconds; PAUSED above ``pause_at`` (a put that may wait waits until the fill is back at
    or below ``pause_at``, or below ``pause_at - hysteresis``); DROPPING when full (the
    policy decides). With ``hysteresis`` h > 0 every state is left downwards only below its
    entry mark minus h. Delays and waits release the GIL, answer Ctrl-C and count against
    the put's timeout; ``put_nowait`` and ``timeout=0`` are never delayed.
    """

    __slots__ = ("throttle_at", "pause_at", "min_delay", "max_delay", "hysteresis")

    def __init__(self, throttle_at: float = 0.70, pause_at: float = 0.90,
                 min_delay: float = 0.0, max_delay: float = 0.5, hysteresis: float = 0.0):
        throttle_at = _fraction("throttle_at", throttle_at)
        pause_at = _fraction("pause_at", pause_at)
        min_delay = _fraction("min_delay", min_delay)
        max_delay = _fraction("max_delay", max_delay)
        hysteresis = _fraction("hysteresis", hysteresis)
        if not 0 < throttle_at <= 1:
            raise ValueError(f"throttle_at must be in (0, 1], got {throttle_at!r}")
        if not throttle_at <= pause_at <= 1:
            raise ValueError(f"pause_at must be in [throttle_at, 1], got {pause_at!r}")
        if not (0 <= min_delay and math.isfinite(min_delay)):
            raise ValueError(f"min_delay must be a finite number >= 0, got {min_delay!r}")
        if not (min_delay <= max_delay <= 86400):
            raise ValueError(f"max_delay must be in [min_delay, 86400], got {max_delay!r}")
        if not 0 <= hysteresis < 1:
            raise ValueError(f"hysteresis must be in [0, 1), got {hysteresis!r}")
        self.throttle_at = throttle_at
        self.pause_at = pause_at
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.hysteresis = hysteresis

    def __repr__(self) -> str:
        return (f"FlowControl(throttle_at={self.throttle_at!r}, pause_at={self.pause_at!r}, "
                f"min_delay={self.min_delay!r}, max_delay={self.max_delay!r}, "
                f"hysteresis={self.hysteresis!r})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FlowControl):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in self.__slots__)

    __hash__ = None  # type: ignore[assignment]


class FlowListener:
    """A registered flow callback (``BoundedStream.on_flow_change``); ``remove()`` ends it.

    The stream keeps the registration until ``remove()`` (dropping this handle does not end
    it). After ``remove()`` returns, no transition made later reaches the callback.
    """

    __slots__ = ("_stream", "_token")

    def __init__(self, stream, token):
        self._stream = stream
        self._token = token

    def remove(self) -> None:
        """Unregisters the callback. Removing twice is harmless."""
        self._stream._remove_flow_listener(self._token)

    def __repr__(self) -> str:
        return f"<bpstream.FlowListener of {self._stream!r}>"


def _deliver(callback: Callable, old: int, new: int, fill: float) -> None:
    """Called by the extension once per transition (GIL held, stream lock not held)."""
    callback(FlowState(old), FlowState(new), fill)


class Recommendation(NamedTuple):
    """What to do about a stream's health, in words a person can act on."""

    action: str
    """``"none"``, ``"watch"`` or ``"act"``."""
    reason: str
    suggestion: str


class Health(NamedTuple):
    """``BoundedStream.health()``: ``status`` is ``"healthy"``, ``"warning"`` or
    ``"unhealthy"`` from ``drop_rate`` (dropped / produced, 0 when nothing was produced)."""

    status: str
    drop_rate: float
    recent_drop_rate: float
    recommendation: Recommendation


_HEALTHY = Recommendation("none", "no items dropped beyond the warning level",
                          "nothing to do")


def _health(stream, warning: float = 0.10, unhealthy: float = 0.30) -> Health:
    """The computation behind ``BoundedStream.health()``.

    ``drop_rate`` = dropped / produced over the stream's life (0 when nothing was
    produced). ``recent_drop_rate`` is the same ratio over the stats' recent window (about
    the last second: the window ``produced_per_second`` covers). The status comes from
    ``drop_rate``: below ``warning`` healthy, from ``warning`` up to ``unhealthy``
    (inclusive) a warning, above ``unhealthy`` unhealthy.
    """
    warning = _fraction("warning", warning)
    unhealthy = _fraction("unhealthy", unhealthy)
    if not 0 <= warning <= unhealthy <= 1:
        raise ValueError(
            f"need 0 <= warning <= unhealthy <= 1, got warning={warning!r}, unhealthy={unhealthy!r}")
    st = stream.stats()
    drop_rate = st.dropped / st.produced if st.produced else 0.0
    recent = st.recent_drop_rate
    if drop_rate > unhealthy:
        status = "unhealthy"
    elif drop_rate >= warning:
        status = "warning"
    else:
        status = "healthy"
    if status == "healthy":
        return Health(status, drop_rate, recent, _HEALTHY)
    share = f"{drop_rate:.0%} of the items produced were dropped"
    if st.dropped_on_close and st.dropped_on_close >= st.dropped - st.dropped_on_close:
        reason = f"{share}, most of them discarded by an immediate close"
        suggestion = "close without immediate=True, or drain the stream before closing"
    else:
        reason = f"{share}: consumer too slow for this producer"
        suggestion = ("raise capacity, add consumers, or switch to drop_oldest"
                      if stream.policy != "drop_oldest"
                      else "raise capacity, add consumers, or slow the producer (rate=)")
    if recent < warning and st.produced_per_second > 0:
        reason += f" (recently {recent:.0%}: improving)"
    action = "act" if status == "unhealthy" else "watch"
    return Health(status, drop_rate, recent, Recommendation(action, reason, suggestion))

"""A live view for demo scenarios: a few named metrics, redrawn several times a second.

    from bpstream._demos.live import Bar, LiveView, Number, Text

    fields = [
        Bar("depth", of="capacity"),          # depth out of the value named "capacity"
        Bar("rate_limit", of=400, unit="/s"),  # out of a fixed maximum
        Number("drops"),
        Number("throughput", unit="/s"),
        Text("flow"),
    ]
    with LiveView("adaptive AIMD", fields) as view:
        while running:
            s = stream.stats()
            view.update(depth=s.depth, capacity=64, rate_limit=s.rate_limit,
                        drops=s.dropped, throughput=s.consumed_per_second,
                        flow=s.flow_state.name)
            time.sleep(0.1)
        view.log("consumer slowed down")  # a line printed above the live view

On a terminal, with ``rich`` importable, the view is a table redrawn in place
(``rich.live.Live``), bars coloured by fill (green, yellow from 70%, red from 90%). Otherwise
(a pipe, a log, CI, ``TERM=dumb``, ``BPSTREAM_DEMO_PLAIN=1``, or rich missing) it prints plain
lines: at most one every ``every`` seconds as values arrive, and a last one when the ``with`` block
ends; no escape codes, no carriage returns. ``update`` is thread-safe: workers may call it.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import IO, Any, Sequence

__all__ = ["Bar", "LiveView", "Number", "Text", "rich_available"]

BAR_WIDTH = 20


@dataclass(frozen=True)
class Bar:
    """``name`` drawn as a bar out of ``of``: a number, or the name of another value given
    to ``update`` (such as ``"capacity"``)."""

    name: str
    of: float | str
    unit: str = ""
    label: str | None = None


@dataclass(frozen=True)
class Number:
    """``name`` shown as a number (ints with thousands separators, floats with one decimal)."""

    name: str
    unit: str = ""
    label: str | None = None


@dataclass(frozen=True)
class Text:
    """``name`` shown as text (a flow state, a health status, a note)."""

    name: str
    label: str | None = None


Field = Bar | Number | Text


def rich_available() -> bool:
    try:
        import rich.live  # noqa: F401
    except ImportError:
        return False
    return True


def _number(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{value}{unit}"
    if isinstance(value, int) or float(value).is_integer() and abs(value) >= 1000:
        text = f"{value:,.0f}"
    elif abs(value) >= 100:
        text = f"{value:,.0f}"
    else:
        text = f"{value:.1f}"
    return text + unit


class LiveView:
    """Named metrics shown live; see the module docstring. ``mode``: ``"auto"`` (rich on a
    terminal when importable, else plain), ``"rich"`` or ``"plain"``. ``refresh``: redraws per
    second in rich mode; ``every``: seconds between plain lines."""

    def __init__(
        self,
        title: str,
        fields: Sequence[Field],
        *,
        mode: str = "auto",
        file: IO[str] | None = None,
        refresh: float = 8.0,
        every: float = 0.5,
    ) -> None:
        if mode not in ("auto", "rich", "plain"):
            raise ValueError(f"mode must be 'auto', 'rich' or 'plain', not {mode!r}")
        names = [f.name for f in fields]
        if len(set(names)) != len(names):
            raise ValueError(f"field names repeat: {names}")
        self.title = title
        self.fields = tuple(fields)
        self._file = file if file is not None else sys.stdout
        if mode == "auto":
            mode = "rich" if self._terminal() and rich_available() else "plain"
        elif mode == "rich" and not rich_available():
            mode = "plain"
        self.mode = mode
        self._refresh = refresh
        self._every = every
        self._lock = threading.Lock()
        self._values: dict[str, Any] = {}
        self._last_line = 0.0
        self._live = None

    def _terminal(self) -> bool:
        if os.environ.get("BPSTREAM_DEMO_PLAIN") or os.environ.get("TERM") == "dumb":
            return False
        isatty = getattr(self._file, "isatty", None)
        return bool(isatty and isatty())

    # ------------------------------------------------------------------ use

    def __enter__(self) -> LiveView:
        if self.mode == "rich":
            from rich.console import Console
            from rich.live import Live

            self._live = Live(
                get_renderable=self._rich_table,
                console=Console(file=self._file),
                refresh_per_second=self._refresh,
                transient=False,
            )
            self._live.start()
        return self

    def __exit__(self, *exc_info) -> None:
        if self._live is not None:
            self._live.stop()  # draws the last values once more and keeps them on screen
            self._live = None
        else:
            with self._lock:
                line = self._plain_line() if self._values else None
            if line is not None:
                print(line, file=self._file, flush=True)

    def update(self, **values: Any) -> None:
        """Set some values (by field name, or names bars refer to with ``of``). In plain mode
        a line is printed when ``every`` seconds have passed since the last one."""
        line = None
        with self._lock:
            self._values.update(values)
            if self._live is None:
                now = time.monotonic()
                if now - self._last_line >= self._every:
                    self._last_line = now
                    line = self._plain_line()
        if line is not None:
            print(line, file=self._file, flush=True)

    def log(self, text: str) -> None:
        """Print a line of its own (above the live table in rich mode)."""
        if self._live is not None:
            self._live.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=self._file, flush=True)

    def values(self) -> dict[str, Any]:
        """A copy of the current values."""
        with self._lock:
            return dict(self._values)

    # ------------------------------------------------------------------ rendering

    def _fraction(self, field: Bar) -> tuple[float | None, Any]:
        value = self._values.get(field.name)
        total = self._values.get(field.of) if isinstance(field.of, str) else field.of
        if not isinstance(value, (int, float)) or not isinstance(total, (int, float)) or total <= 0:
            return None, total
        return min(max(value / total, 0.0), 1.0), total

    def _cells(self, field: Field) -> tuple[str, str, float | None]:
        """(label, text, bar fraction or None) for one field."""
        label = field.label or field.name.replace("_", " ")
        value = self._values.get(field.name)
        if isinstance(field, Bar):
            fraction, total = self._fraction(field)
            text = f"{_number(value)}/{_number(total)}{field.unit}"
            return label, text, fraction
        if isinstance(field, Number):
            return label, _number(value, field.unit), None
        return label, "-" if value is None else str(value), None

    def _plain_line(self) -> str:
        parts = [self.title]
        for field in self.fields:
            label, text, fraction = self._cells(field)
            if isinstance(field, Bar):
                filled = round(BAR_WIDTH / 2 * (fraction or 0.0))
                bar = "#" * filled + "." * (BAR_WIDTH // 2 - filled)
                parts.append(f"{label} [{bar}] {text}")
            else:
                parts.append(f"{label} {text}")
        return " | ".join(parts)

    def _rich_table(self):
        from rich.table import Table
        from rich.text import Text as RichText

        with self._lock:
            rows = [(f, *self._cells(f)) for f in self.fields]
        table = Table(title=self.title, show_header=False, box=None, padding=(0, 1))
        table.add_column(style="bold")
        table.add_column()
        table.add_column(justify="right")
        for field, label, text, fraction in rows:
            if isinstance(field, Bar):
                filled = round(BAR_WIDTH * (fraction or 0.0))
                colour = "green" if (fraction or 0) < 0.7 else "yellow" if fraction < 0.9 else "red"
                bar = RichText("█" * filled, style=colour) + RichText("░" * (BAR_WIDTH - filled), style="dim")
                table.add_row(label, bar, text)
            else:
                table.add_row(label, "", text)
        return table

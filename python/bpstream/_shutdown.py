"""ShutdownReport: what a fan-out or pipeline did with every item it was given.

THE CONSERVATION LAW
 Every item handed to a FanOut / Pipeline ends in exactly one bucket:

     produced == processed + failed + dropped + discarded + abandoned

 processed  the worker function returned (in a pipeline stage: its result was handed on)
 failed     the worker function raised
 dropped    the stream's policy shed, evicted or cleared it (drop_newest, drop_oldest,
            drop_all; a pipeline stage with the reject policy refusing a hand-off)
 discarded  still buffered when the backlog was discarded (a deadline, cancel_pending,
            fail_fast, Ctrl-C), or finished by a pipeline stage but not handed on in time
 abandoned  in the hands of a worker that was abandoned (a thread still busy at the
            deadline) or cancelled (an asyncio task)

 and every worker either ended (joined) or was given up (aborted): joined + aborted == workers.

HOW THE COUNTS ARE EXACT WITHOUT A LOCK PER ITEM
 The stream's own stats() counts produced, consumed and dropped exactly. Workers count what
 they finished in a list only they write. A report is made only once every stream is closed
 and empty (drained, or closed with immediate=True), so the streams' stats are frozen; the
 workers' counters are read after them. An item consumed but not yet counted as finished by
 its worker is, at that instant, in a worker's hands: abandoned = consumed - finished. A
 counter read after the stats can only be higher than at the snapshot, never counting an
 item the stats do not, so every bucket is >= 0 and the law holds by construction; the tests
 check the buckets against what the workers observably did.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: What ended a shutdown, most telling first when several apply.
REASONS = ("interrupted", "fail_fast", "deadline", "cancelled", "drained")

_COLUMNS = (
    "produced",
    "processed",
    "failed",
    "dropped",
    "discarded",
    "abandoned",
    "workers",
    "joined",
    "aborted",
)


@dataclass(frozen=True)
class ShutdownReport:
    """How a ``FanOut``, ``AsyncFanOut`` or ``Pipeline`` shut down, item by item.

    ``produced`` items were handed in (``submit``/``feed``; for a pipeline stage, offered to
    it by the stage before). Each ended in exactly one of ``processed``, ``failed``,
    ``dropped`` (shed by the stream's policy), ``discarded`` (still buffered, or finished by
    a stage but not handed on, when the backlog was thrown away) or ``abandoned`` (in the
    hands of a worker thread left running at the deadline, or of a cancelled task).
    ``workers`` threads or tasks ran: ``joined`` ended, ``aborted`` were abandoned or
    cancelled. ``balanced`` checks both sums.

    ``reason`` is one of ``"drained"`` (every item was worked off), ``"cancelled"``
    (``cancel_pending=True`` discarded the backlog), ``"deadline"`` (the deadline passed
    first), ``"fail_fast"`` (a worker raised with ``fail_fast=True``) and ``"interrupted"``
    (Ctrl-C or another exception, or the cancellation of an awaiting task, while shutting
    down). ``errors`` holds the exceptions workers raised, in order, at most the first
    ``MAX_ERRORS`` (100); ``failed`` counts them all. ``stages`` holds one report per stage
    of a ``Pipeline`` (empty otherwise); the pipeline's own report is end to end: produced
    is what entered the first stage, processed what the last stage finished, the other
    buckets the sums over the stages.
    """

    produced: int
    processed: int
    failed: int
    dropped: int
    discarded: int
    abandoned: int
    workers: int
    joined: int
    aborted: int
    deadline_hit: bool
    elapsed: float
    reason: str
    errors: tuple[BaseException, ...] = ()
    stages: tuple[ShutdownReport, ...] = ()
    name: str = field(default="")

    @property
    def balanced(self) -> bool:
        """True exactly when every item and every worker is accounted for."""
        items = self.processed + self.failed + self.dropped + self.discarded + self.abandoned
        return self.produced == items and self.joined + self.aborted == self.workers

    def table(self) -> str:
        """The counts as a small aligned table: one row, or one per stage and a total."""
        rows = [("", *_COLUMNS)]
        for stage in self.stages:
            rows.append((stage.name or "stage", *(str(getattr(stage, c)) for c in _COLUMNS)))
        rows.append((self.name or "total", *(str(getattr(self, c)) for c in _COLUMNS)))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = []
        for row in rows:
            cells = [row[0].ljust(widths[0])]
            cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])]
            lines.append("  ".join(cells).rstrip())
        return "\n".join(lines)

    def __str__(self) -> str:
        verdict = "balanced" if self.balanced else "NOT BALANCED"
        head = (
            f"shutdown {self.reason} in {self.elapsed:.3f} s"
            f"{' (deadline hit)' if self.deadline_hit else ''}: {verdict}"
        )
        lines = [head, self.table()]
        if self.failed:
            shown = ", ".join(repr(e) for e in self.errors[:3])
            more = f" (+{self.failed - 3} more)" if self.failed > 3 else ""
            lines.append(f"errors: {shown}{more}")
        return "\n".join(lines)


#: How many worker exceptions a report keeps (failed counts every one).
MAX_ERRORS = 100


def stage_report(
    name: str,
    stats,
    *,
    offered_extra: int,
    processed: int,
    failed: int,
    unpassed: int,
    workers: int,
    aborted: int,
    deadline_hit: bool,
    elapsed: float,
    reason: str,
    errors: tuple[BaseException, ...],
) -> ShutdownReport:
    """One stage's report from its stream's frozen stats and its workers' counters.

    offered_extra: hand-offs the stream refused (a pipeline stage with the reject policy):
    offered to the stage, so produced, and lost there, so dropped. unpassed: items the
    stage's workers finished but could not hand on (the next stream was closed), which
    count as discarded. Whatever the stream delivered and no counter accounts for was in a
    worker's hands: abandoned.
    """
    policy_drops = stats.dropped_shed + stats.dropped_evicted + stats.dropped_cleared
    finished = processed + failed + unpassed
    return ShutdownReport(
        produced=stats.produced + offered_extra,
        processed=processed,
        failed=failed,
        dropped=policy_drops + offered_extra,
        discarded=stats.dropped_on_close + unpassed,  # depth is 0 once closed: if not, unbalanced
        abandoned=stats.consumed - finished,
        workers=workers,
        joined=workers - aborted,
        aborted=aborted,
        deadline_hit=deadline_hit,
        elapsed=elapsed,
        reason=reason,
        errors=errors,
        name=name,
    )

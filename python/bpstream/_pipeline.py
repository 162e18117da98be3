"""Pipeline and Stage: worker-thread stages joined by bounded streams, with one
structured shutdown. The engine (threads, counters, shutdown) is _workers.py."""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any, Callable

from ._bpstream import Policy
from ._workers import ThreadFront, check_workers


@dataclass(frozen=True)
class Stage:
    """One stage of a Pipeline: ``workers`` threads call ``fn(item)`` on what the stage
    before handed on, pulling from a ``BoundedStream(capacity, policy)``: the capacity is
    the stage's WIP limit (how many items may wait for it), the policy what a hand-off into
    a full stage does (block: the stage before waits; drop_newest, drop_oldest, drop_all:
    shed, counted as dropped; reject: refused, counted as dropped)."""

    fn: Callable[[Any], Any]
    workers: int = 2
    capacity: int = 16
    policy: Policy | str = "block"
    name: str | None = None

    def __post_init__(self):
        if not callable(self.fn):
            raise TypeError(f"Stage fn must be callable, not {type(self.fn).__name__}")
        check_workers(self.workers)
        object.__setattr__(self, "policy", Policy(self.policy))


class Pipeline(ThreadFront):
    """Stages of worker threads connected by bounded streams.

        with bpstream.Pipeline([Stage(fetch, workers=8, capacity=32),
                                Stage(parse, workers=2),
                                Stage(store, workers=1, capacity=8)]) as pipe:
            pipe.feed(urls)
        print(pipe.report)                 # one row per stage and the end-to-end total

    Each stage's workers pull from the stage's own stream; what ``fn(item)`` returns (None
    included) is handed to the next stage with that stage's policy. The last stage's
    return values are dropped: make it the sink (store, send, append to a list). A stage
    that blocks on a full next stage holds its own workers back: backpressure travels up to
    ``submit()``.

    ``submit``/``feed``/``with``/``shutdown``/``report`` behave as FanOut's (see there). The
    shutdown drains stage by stage: the first stream closes, and once every worker of a
    stage has ended the next stage's stream closes. At the deadline (or with
    cancel_pending=True, fail_fast, Ctrl-C) every stage's backlog is discarded; an item a
    stage finished but could not hand on any more counts as discarded in that stage; a
    worker still busy is abandoned (threads cannot be killed; see FanOut).

    ``report.stages`` holds one ShutdownReport per stage (each balanced on its own: what a
    stage processed is what the next one was offered). The top report is end to end:
    produced is what entered the first stage, processed what the last stage finished,
    failed/dropped/discarded/abandoned and the worker counts are sums over the stages.
    Only threads: there is no async Pipeline (use AsyncFanOut per stage, or threads).
    """

    def __init__(self, stages, *, fail_fast=False, name=None):
        stages = list(stages)
        if not stages:
            raise ValueError("a Pipeline needs at least one Stage")
        specs = []
        for index, stage in enumerate(stages):
            if not isinstance(stage, Stage):
                raise TypeError(f"stages[{index}] must be a bpstream.Stage, not {type(stage).__name__}")
            stage_name = stage.name or getattr(stage.fn, "__name__", None) or f"stage{index}"
            specs.append((stage.fn, stage.workers, stage.capacity, stage.policy, str(stage_name)))
        self._stage_specs = tuple(stages)
        self._setup(specs, fail_fast, str(name) if name is not None else "Pipeline", staged=True)
        self._finalizer = weakref.finalize(self, self._run.release)

    @property
    def stages(self) -> tuple[Stage, ...]:
        return self._stage_specs

    def __repr__(self) -> str:
        state = self.report.reason if self.report is not None else "running"
        names = " -> ".join(stage.name for stage in self._run.stages)
        return f"<Pipeline {self.name!r} [{names}] pending={self.pending} {state}>"

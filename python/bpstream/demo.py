"""bpstream's demonstration: every scenario in order, or one by name.

    python -m bpstream.demo                  # every scenario, in order
    python -m bpstream.demo kanban           # one scenario
    python -m bpstream.demo --list           # what there is
    python -m bpstream.demo --quick          # every scenario, short runs
    python -m bpstream.demo adaptive --plot adaptive.png   # a scenario that draws a plot

Scenarios live in modules under ``bpstream._demos`` and are imported only when they run.
``SCENARIOS`` maps a name to ``"module:function"``; a scenario whose module is not there (an
optional part not built or not written yet) is skipped with a note. A scenario function
takes whichever of these keyword arguments it declares: ``quick`` (bool), ``seconds``
(float or None) and ``plot`` (a PNG path or None; only scenarios that declare it draw one).
It returns None or True when its checks held, False when one failed. Live views use
``bpstream._demos.live.LiveView`` (rich on a terminal, plain lines otherwise).

Exit status: 0 when every scenario that ran held its checks, 1 when one failed, 2 for a
usage error, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Scenario:
    target: str  # "module:function"
    summary: str

    @property
    def module(self) -> str:
        return self.target.partition(":")[0]

    def available(self) -> bool:
        try:
            return importlib.util.find_spec(self.module) is not None
        except ModuleNotFoundError:
            return False

    def load(self) -> Callable | None:
        """The scenario function, or None when its module (or the function) is not there.
        An import error inside an existing module is a bug and propagates."""
        module_name, _, function = self.target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                return None
            raise
        return getattr(module, function, None)


# In the order `python -m bpstream.demo` runs them.
SCENARIOS: dict[str, Scenario] = {
    "overload": Scenario(
        "bpstream._demos.overload:policies",
        "one fast producer, one slow consumer, the five policies compared",
    ),
    "asyncio": Scenario(
        "bpstream._demos.overload:native_reader_async",
        "a native reader thread feeding a slow `async for` task; the loop stays free",
    ),
    "blocking": Scenario(
        "bpstream._demos.control:blocking",
        "producer 200/s against consumer 50/s, policy block: held to the consumer's pace",
    ),
    "drop-oldest": Scenario(
        "bpstream._demos.control:drop_oldest",
        "the same load with drop_oldest: the producer runs free, stale items are evicted",
    ),
    "adaptive": Scenario(
        "bpstream._demos.control:adaptive",
        "policy adaptive: an AIMD rate limit following a varying consumer (--plot FILE.png)",
    ),
    "token-bucket": Scenario(
        "bpstream._demos.control:token_bucket",
        "a bursty producer (0-500/s) paced by a TokenBucket to a steady consumer (50/s)",
    ),
    "flow-states": Scenario(
        "bpstream._demos.control:flow_states",
        "the throttle curve, a pause and resume, health turning unhealthy",
    ),
    "strategies": Scenario(
        "bpstream._demos.control:strategies",
        "one overload, six strategies side by side",
    ),
    "policy-illustration": Scenario(
        "bpstream._demos.pipelines:illustration_scenario",
        "buffer 4, ids 0..7 pushed then drained: what drop_newest and drop_oldest keep",
    ),
    "overload-stress": Scenario(
        "bpstream._demos.pipelines:stress_scenario",
        "a 4,000-item burst into 4 slow workers; conservation checked per policy",
    ),
    "admission": Scenario(
        "bpstream._demos.admission:admission",
        "a Limiter live: slots in use, waiting workers, utilization; limits changed mid-run",
    ),
    "kanban": Scenario(
        "bpstream._demos.kanban:kanban",
        "a kanban board live: stages with WIP limits filling and emptying as workers pull",
    ),
}


def _accepts(function: Callable, name: str) -> bool:
    params = inspect.signature(function).parameters
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _matplotlib_missing() -> bool:
    try:
        return importlib.util.find_spec("matplotlib") is None
    except ValueError:
        return True


def run_scenario(name: str, function: Callable, options: dict) -> bool:
    kwargs = {k: v for k, v in options.items() if v is not None and _accepts(function, k)}
    started = time.monotonic()
    try:
        result = function(**kwargs)
    except KeyboardInterrupt:
        raise
    except Exception:
        traceback.print_exc()
        result = False
    ok = result is None or result is True or result == 0 and not isinstance(result, bool)
    print(f"-- {name}: {'ok' if ok else 'CHECK FAILED'} ({time.monotonic() - started:.1f} s)",
          flush=True)
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bpstream.demo",
        description="bpstream's scenarios: every one in order, or the one named.",
    )
    parser.add_argument("name", nargs="?", help="run only this scenario (see --list)")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--quick", action="store_true", help="short runs")
    parser.add_argument("--seconds", type=float, default=None,
                        help="run time for scenarios that take one (overload: per policy)")
    parser.add_argument("--plot", metavar="FILE.png", default=None,
                        help="draw a plot (needs matplotlib) for the scenario that supports it")
    args = parser.parse_args(argv)

    if args.list:
        width = max(map(len, SCENARIOS))
        for name, scenario in SCENARIOS.items():
            note = "" if scenario.available() else "  (not available in this build)"
            print(f"{name:<{width}}  {scenario.summary}{note}")
        return 0
    if args.name is not None and args.name not in SCENARIOS:
        parser.error(f"no scenario {args.name!r}; choose from: {', '.join(SCENARIOS)}")
    if args.seconds is not None and not 0 < args.seconds <= 5:
        parser.error("--seconds must be in (0, 5]")
    if args.plot is not None and _matplotlib_missing():
        print("--plot needs matplotlib, which is not installed here: "
              f"`{sys.executable} -m pip install matplotlib`, or run without --plot.",
              file=sys.stderr)
        return 2

    names = [args.name] if args.name is not None else list(SCENARIOS)
    options = {"quick": args.quick or None, "seconds": args.seconds, "plot": args.plot}
    failed: list[str] = []
    plotted = False
    try:
        for index, name in enumerate(names):
            function = SCENARIOS[name].load()
            if function is None:
                print(f"-- {name}: skipped ({SCENARIOS[name].target} is not available in this build)")
                continue
            if args.plot is not None and args.name is not None and not _accepts(function, "plot"):
                print(f"scenario {name!r} draws no plot; leave out --plot", file=sys.stderr)
                return 2
            plotted |= args.plot is not None and _accepts(function, "plot")
            if len(names) > 1:
                print(f"{chr(10) if index else ''}== {name}: {SCENARIOS[name].summary}", flush=True)
            if not run_scenario(name, function, options):
                failed.append(name)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    if args.plot is not None and not plotted:
        print(f"note: no scenario that ran draws a plot; {args.plot} was not written")
    if failed:
        print(f"\nchecks failed in: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The demo: `python -m bpstream.demo` lists, runs one scenario by name, skips missing optional
scenarios, reports failed checks in its exit status; the live view prints plain lines when
no terminal is attached."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from bpstream import demo
from bpstream._demos.live import Bar, LiveView, Number, Text, rich_available

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))


def run_demo(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("BPSTREAM_DEMO_PLAIN", None)
    return subprocess.run(
        [sys.executable, "-m", "bpstream.demo", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env,
    )


def test_list_names_every_registered_scenario():
    done = run_demo("--list")
    assert done.returncode == 0, done.stderr
    listed = [line.split()[0] for line in done.stdout.splitlines() if line.strip()]
    assert listed == list(demo.SCENARIOS)
    for name in ("overload", "asyncio", "policy-illustration", "overload-stress", "kanban"):
        assert name in listed


def test_one_scenario_runs_by_name_in_plain_lines():
    done = run_demo("kanban", "--quick")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "\x1b[" not in out and "\r" not in out  # no terminal: plain lines
    live_lines = [line for line in out.splitlines() if line.startswith("kanban | backlog")]
    assert len(live_lines) >= 2, out  # at least a first and a last line
    assert "ready [" in live_lines[-1] and "done 12" in live_lines[-1]
    assert "12 of 12 items done" in out
    assert "WIP limits held on every snapshot: yes" in out
    assert "-- kanban: ok" in out
    assert "overload" not in out  # only the scenario named ran


def test_flow_states_scenario_shows_the_curve_the_pause_and_health():
    done = run_demo("flow-states")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "depth  70: THROTTLED delay   1.00 ms" in out
    assert "depth  80: THROTTLED delay  50.50 ms" in out
    assert "depth  91: PAUSED" in out and "depth 100: DROPPING" in out
    assert "healthy (drop rate 0.00) -> warning" in out and "-> unhealthy" in out
    assert "-- flow-states: ok" in out


@pytest.mark.parametrize("name", ["adaptive", "strategies", "admission"])
def test_control_scenarios_run_quickly_and_hold_their_checks(name):
    done = run_demo(name, "--quick")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"-- {name}: ok" in done.stdout
    assert "BROKEN" not in done.stdout


def test_an_unknown_scenario_is_a_usage_error():
    done = run_demo("no-such-scenario")
    assert done.returncode == 2
    assert "no scenario 'no-such-scenario'" in done.stderr and "kanban" in done.stderr


def test_plot_needs_matplotlib_or_a_scenario_that_draws_one():
    done = run_demo("kanban", "--plot", "never-written.png")
    assert done.returncode == 2
    if demo._matplotlib_missing():
        assert "--plot needs matplotlib" in done.stderr
    else:
        assert "draws no plot" in done.stderr
    assert not os.path.exists(os.path.join(ROOT, "never-written.png"))


# ------------------------------------------------------------------ the registry, in-process

CALLS: list[dict] = []


def passing(quick=False):
    CALLS.append({"quick": quick})
    print("passing ran")


def failing(**options):
    CALLS.append(options)
    return False


def crashing():
    raise RuntimeError("scenario bug")


def plotting(plot=None):
    CALLS.append({"plot": plot})


@pytest.fixture
def registry(monkeypatch):
    here = __name__
    scenarios = {
        "passing": demo.Scenario(f"{here}:passing", "returns None"),
        "missing": demo.Scenario("bpstream._demos.not_written_yet:scenario", "a module not there"),
        "failing": demo.Scenario(f"{here}:failing", "returns False"),
        "crashing": demo.Scenario(f"{here}:crashing", "raises"),
        "plotting": demo.Scenario(f"{here}:plotting", "draws a plot"),
    }
    monkeypatch.setattr(demo, "SCENARIOS", scenarios)
    CALLS.clear()
    return scenarios


def test_every_scenario_runs_in_order_missing_ones_skipped_and_failures_reported(registry, capsys):
    assert demo.main(["--quick", "--seconds", "1"]) == 1
    out, err = capsys.readouterr()
    assert "passing ran" in out
    assert "-- missing: skipped (bpstream._demos.not_written_yet:scenario is not available" in out
    assert "-- passing: ok" in out
    assert "-- failing: CHECK FAILED" in out and "-- crashing: CHECK FAILED" in out
    assert "RuntimeError: scenario bug" in err
    assert "checks failed in: failing, crashing" in err
    # Each function got only the options it declares (**options takes them all).
    assert CALLS == [{"quick": True}, {"quick": True, "seconds": 1.0}, {"plot": None}]
    assert out.index("== passing") < out.index("== failing") < out.index("== crashing")


def test_a_passing_scenario_alone_exits_zero(registry, capsys):
    assert demo.main(["passing"]) == 0
    assert CALLS == [{"quick": False}]
    assert demo.main(["missing"]) == 0
    assert "skipped" in capsys.readouterr().out


def test_plot_goes_to_the_scenarios_that_declare_it(registry, monkeypatch, capsys):
    monkeypatch.setattr(demo, "_matplotlib_missing", lambda: False)
    assert demo.main(["plotting", "--plot", "out.png"]) == 0
    assert CALLS == [{"plot": "out.png"}]
    assert demo.main(["passing", "--plot", "out.png"]) == 2
    assert "draws no plot" in capsys.readouterr().err
    monkeypatch.setattr(demo, "_matplotlib_missing", lambda: True)
    assert demo.main(["plotting", "--plot", "out.png"]) == 2
    assert "--plot needs matplotlib" in capsys.readouterr().err
    assert CALLS == [{"plot": "out.png"}]


def test_list_marks_scenarios_whose_module_is_not_there(registry, capsys):
    assert demo.main(["--list"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "not available" in lines["missing"] and "not available" not in lines["passing"]


# ------------------------------------------------------------------ the live view

FIELDS = [Bar("depth", of="capacity"), Number("drops"), Number("rate", unit="/s"), Text("flow")]


def test_live_view_without_a_terminal_prints_plain_lines():
    out = io.StringIO()
    with LiveView("demo", FIELDS, file=out, every=0) as view:
        assert view.mode == "plain"
        view.update(depth=5, capacity=10, drops=1234, rate=12.345, flow="THROTTLED")
        view.update(depth=10, drops=1300)
        view.log("consumer slowed down")
    lines = out.getvalue().splitlines()
    assert lines == [
        "demo | depth [#####.....] 5/10 | drops 1,234 | rate 12.3/s | flow THROTTLED",
        "demo | depth [##########] 10/10 | drops 1,300 | rate 12.3/s | flow THROTTLED",
        "consumer slowed down",
        "demo | depth [##########] 10/10 | drops 1,300 | rate 12.3/s | flow THROTTLED",
    ]


def test_plain_lines_come_at_most_once_per_interval_and_once_at_the_end():
    out = io.StringIO()
    with LiveView("demo", FIELDS, file=out, every=60) as view:
        for depth in range(100):
            view.update(depth=depth % 11, capacity=10, drops=depth)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert "drops 0 " in lines[0] + " " and "drops 99" in lines[1]


def test_missing_values_and_bad_fields():
    out = io.StringIO()
    with LiveView("empty", FIELDS, file=out, every=0) as view:
        view.update(flow="NORMAL")
    assert out.getvalue().splitlines()[0] == "empty | depth [..........] -/- | drops - | rate - | flow NORMAL"
    with pytest.raises(ValueError):
        LiveView("x", [Number("a"), Text("a")])
    with pytest.raises(ValueError):
        LiveView("x", FIELDS, mode="fancy")


@pytest.mark.skipif(not rich_available(), reason="rich not installed")
def test_rich_mode_draws_the_values():
    out = io.StringIO()
    with LiveView("rich demo", FIELDS, mode="rich", file=out) as view:
        assert view.mode == "rich"
        view.update(depth=3, capacity=4, drops=7, rate=2.0, flow="PAUSED")
    text = out.getvalue()
    assert "rich demo" in text and "3/4" in text and "PAUSED" in text


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_ends_the_demo_promptly_with_130():
    import signal
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "bpstream.demo", "kanban"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout.readline().startswith("board:")  # the scenario is running
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 130, out + err
    assert "interrupted" in err and "-- kanban: ok" not in out

"""Every example script and the demo run as written, exit 0 and say what they promise.

They run as a user would run them: `python examples/NAME.py` from the repository root,
with the installed bpstream (token_streaming.py builds examples/native_producer itself)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))
EXAMPLES = os.path.join(ROOT, "examples")
SCRIPTS = sorted(name for name in os.listdir(EXAMPLES) if name.endswith(".py"))


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def test_there_is_an_example_per_policy():
    for policy in ("block", "drop_oldest", "drop_newest", "reject", "drop_all"):
        assert any(name.startswith(policy) for name in SCRIPTS), policy


@pytest.mark.parametrize("script", SCRIPTS)
def test_example_runs_as_written(script):
    done = run(os.path.join("examples", script))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip(), "an example says what happened"


def test_token_streaming_stops_the_native_producer():
    done = run(os.path.join("examples", "token_streaming.py"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "producer exited: True" in done.stdout
    assert "tok11" in done.stdout and "tok12 " not in done.stdout


def test_demo_quick_prints_plain_text_and_a_table():
    done = run("-m", "bpstream.demo", "--quick")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "\x1b[" not in done.stdout and "\r" not in done.stdout  # not a terminal: plain
    for policy in ("block", "drop_oldest", "drop_newest", "reject", "drop_all"):
        assert policy in done.stdout
    assert "identity holds" in done.stdout
    # The asyncio scenario: the reader held back by the task, the loop free meanwhile.
    line = next(l for l in done.stdout.splitlines() if l.strip().startswith("consumed "))
    numbers = re.search(r"waited ([\d,]+) times .* peak (\d+)\); the loop ran (\d+) heartbeats", line)
    assert numbers and "identity holds" in line, line
    waits, peak, heartbeats = (int(g.replace(",", "")) for g in numbers.groups())
    assert waits > 0 and peak <= 64 and heartbeats > 0, line


def test_sync_over_async_holds_the_producer_back_and_cleans_up():
    done = run(os.path.join("examples", "sync_over_async.py"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "generator finally ran: True; threads left: 0" in done.stdout
    assert "bounded version held back and cleaned up: True" in done.stdout


def test_async_tokens_stops_the_native_producer():
    done = run(os.path.join("examples", "async_tokens.py"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "producer exited: True" in done.stdout
    assert "tok11" in done.stdout and "tok12 " not in done.stdout

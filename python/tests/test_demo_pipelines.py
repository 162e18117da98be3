"""The fan-out demo scenarios (bpstream._demos.pipelines) say what the issue promises."""

import subprocess
import sys

from bpstream._demos import pipelines
from support import child_env


def test_policy_illustration(capsys):
    kept = pipelines.policy_illustration()
    assert kept == {"drop_newest": [0, 1, 2, 3], "drop_oldest": [4, 5, 6, 7]}
    out = capsys.readouterr().out
    assert "drop_newest  keeps [0, 1, 2, 3]" in out and "drop_oldest  keeps [4, 5, 6, 7]" in out


def test_overload_stress_table_and_conservation(capsys):
    reports = pipelines.overload_stress()
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = next(line.split() for line in lines if line.strip().startswith("policy"))
    assert header == ["policy", "produced", "processed", "dropped", "joined", "aborted"]
    assert "conservation held" in out
    assert [r.name for r in reports] == ["drop_newest", "drop_oldest"]
    for report in reports:
        assert report.balanced and report.produced == 4000 and report.dropped > 0
        assert (report.joined, report.aborted) == (4, 0)
        row = next(line.split() for line in lines if line.strip().startswith(report.name + " "))
        assert row[1:] == [str(report.produced), str(report.processed), str(report.dropped), "4", "0"]


def test_runs_standalone():
    done = subprocess.run(
        [sys.executable, "-m", "bpstream._demos.pipelines"],
        capture_output=True, text=True, timeout=60, env=child_env(),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "conservation held" in done.stdout and "keeps [4, 5, 6, 7]" in done.stdout

"""Demo scenarios for fan-out and overload policies (issue 10, section 4).

    python -m bpstream._demos.pipelines            # both scenarios, about a second

policy_illustration()  a buffer of 4, ids 0..7 pushed, then drained: what each drop policy
                       keeps (drop_newest [0, 1, 2, 3], drop_oldest [4, 5, 6, 7])
overload_stress()      a 4,000-item burst into a FanOut with a buffer of 16 and 4 slow
                       workers, per drop policy; the shutdown reports as a table, and
                       "conservation held" when every report balances

Each prints its own output and returns what it found (for tests and the demo framework).
"""

from __future__ import annotations

import time

import bpstream

ILLUSTRATED = ("drop_newest", "drop_oldest")
STRESS_POLICIES = ("drop_newest", "drop_oldest")
STRESS_ITEMS = 4_000
STRESS_BUFFER = 16
STRESS_WORKERS = 4
STRESS_WORK = 0.001  # seconds per item: 4 workers keep up with ~4,000 items/s at best


def policy_illustration(capacity: int = 4, ids: int = 8) -> dict[str, list[int]]:
    """Push ids 0..ids-1 into a full-able buffer, then drain it; print what stayed."""
    print(f"policy illustration: a buffer of {capacity}, ids 0..{ids - 1} pushed, then drained")
    kept: dict[str, list[int]] = {}
    for policy in ILLUSTRATED:
        stream = bpstream.BoundedStream(capacity, policy)
        answers = [stream.put(i) for i in range(ids)]
        stream.close()
        kept[policy] = list(stream)
        st = stream.stats()
        shed = [i for i, stored in enumerate(answers) if not stored]
        how = (
            f"put() returned False for {shed}"
            if shed
            else f"every put() returned True; {st.dropped_evicted} older items evicted"
        )
        print(f"  {policy:<12} keeps {kept[policy]}  ({how}; dropped {st.dropped})")
    print("  drop_newest keeps the backlog in order and loses the tail;"
          " drop_oldest keeps the freshest items.")
    return kept


def overload_stress(
    items: int = STRESS_ITEMS,
    buffer: int = STRESS_BUFFER,
    workers: int = STRESS_WORKERS,
    work: float = STRESS_WORK,
) -> list[bpstream.ShutdownReport]:
    """A burst far beyond the workers' pace, per drop policy; prints the reports' table."""
    print(
        f"overload stress: a {items:,}-item burst, buffer {buffer}, {workers} workers at "
        f"{work * 1000:g} ms per item"
    )

    reports = []
    worked: dict[str, list[int]] = {}
    for policy in STRESS_POLICIES:
        seen = worked[policy] = []

        def slow(item, seen=seen):
            time.sleep(work)
            seen.append(item)  # list.append is atomic: no lock needed

        with bpstream.FanOut(slow, workers=workers, capacity=buffer, policy=policy, name=policy) as fan:
            for i in range(items):
                fan.submit(i)
        reports.append(fan.report)
    columns = ("policy", "produced", "processed", "dropped", "joined", "aborted")
    rows = [columns] + [
        (r.name, *(str(getattr(r, c)) for c in columns[1:])) for r in reports
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    for row in rows:
        print("  " + "  ".join([row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]))
    for policy, seen in worked.items():
        seen.sort()
        print(f"  {policy} worked on ids {_spans(seen)}")
    if all(r.balanced for r in reports):
        print("  conservation held: produced == processed + failed + dropped + discarded + abandoned")
    else:
        print("  conservation FAILED:", *[str(r) for r in reports if not r.balanced], sep="\n")
    return reports


def illustration_scenario() -> bool:
    """`python -m bpstream.demo policy-illustration`: True when each policy kept what it should."""
    kept = policy_illustration()
    return kept == {"drop_newest": [0, 1, 2, 3], "drop_oldest": [4, 5, 6, 7]}


def stress_scenario() -> bool:
    """`python -m bpstream.demo overload-stress`: True when every report balances."""
    return all(r.balanced and r.joined == r.workers for r in overload_stress())


def _spans(ids: list[int]) -> str:
    """[0, 1, 2, 7, 8] -> '0..2, 7..8'."""
    spans: list[list[int]] = []
    for i in ids:
        if spans and i == spans[-1][1] + 1:
            spans[-1][1] = i
        else:
            spans.append([i, i])
    return ", ".join(f"{a}..{b}" if a != b else str(a) for a, b in spans)


def main() -> int:
    policy_illustration()
    print()
    reports = overload_stress()
    return 0 if all(r.balanced for r in reports) else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Pipeline: stages of worker threads joined by bounded streams (a WIP limit per stage),
backpressure from the slowest stage up to the producer, and a per-stage shutdown report.

Log lines go through three stages:
  parse   2 workers   split a line into fields (fast)
  lookup  8 workers   enrich with a user's country from a slow service (simulated I/O)
  store   1 worker    append to the "database" (one writer, in order of arrival)

Each stage's capacity bounds how much work may wait for it, so a slow lookup holds parse
back, and parse holds back feed(): memory stays bounded however many lines come in.
"""

import time

from bpstream import Pipeline, Stage

COUNTRIES = ("fr", "jp", "br", "ke", "ca")


def log_lines(n):
    for i in range(n):
        yield f"2026-11-29T12:00:{i % 60:02d} user{i % 37} GET /item/{i}"


def parse(line: str) -> dict:
    stamp, user, method, path = line.split()
    return {"at": stamp, "user": user, "method": method, "path": path}


def lookup(record: dict) -> dict:
    time.sleep(0.002)  # a call to the user service
    record["country"] = COUNTRIES[sum(map(ord, record["user"])) % len(COUNTRIES)]
    return record


database: list = []


def store(record: dict) -> None:
    database.append(record)  # the last stage is the sink: its return value is not used


def main() -> None:
    stages = [
        Stage(parse, workers=2, capacity=64),
        Stage(lookup, workers=8, capacity=32),
        Stage(store, workers=1, capacity=16),
    ]
    started = time.perf_counter()
    with Pipeline(stages, name="logs") as pipe:
        fed = pipe.feed(log_lines(1000))
    elapsed = time.perf_counter() - started
    report = pipe.report
    print(report)
    print(f"fed {fed} lines, stored {len(database)} records in {elapsed:.2f} s; "
          f"every stage balanced: {all(s.balanced for s in report.stages)}")
    print("a stored record:", database[0])


if __name__ == "__main__":
    main()

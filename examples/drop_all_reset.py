"""drop_all: when the backlog overflows, throw all of it away and resync.

Use policy="drop_all" when a backlog is useful only as a whole: once anything
is lost the consumer must start over from scratch anyway, so every item still
queued is wasted work. When the stream is full, put() clears the backlog and
stores the new item; the consumer notices the gap and resyncs once.

Here a file watcher reports changed files and an indexer re-indexes each one
(2 ms). A `git checkout` touches 3,000 files and overflows the 100-event buffer.
As with inotify's overflow event, the gap makes the indexer do one full rescan
(50 ms) instead of 3,000 single-file updates, skipping events it covers.
"""

import threading
import time

import bpstream


def indexer(stream: bpstream.BoundedStream, log: dict) -> None:
    expected, rescan_started = 0, 0.0
    for seq, when, _path in stream:
        if seq != expected:  # events were cleared: the backlog is gone
            log["rescans"] += 1
            rescan_started = time.monotonic()
            time.sleep(0.05)  # walk the whole tree
        expected = seq + 1
        if when < rescan_started:
            log["covered"] += 1  # already indexed by the rescan
            continue
        time.sleep(0.002)  # re-index one file
        log["indexed"] += 1


def main() -> None:
    stream = bpstream.BoundedStream(100, policy="drop_all")
    log = {"rescans": 0, "covered": 0, "indexed": 0}
    t = threading.Thread(target=indexer, args=(stream, log))
    t.start()

    seq = 0
    for burst in (20, 3000, 20):  # edits, a checkout, edits
        for _ in range(burst):
            stream.put((seq, time.monotonic(), f"src/file{seq}.py"))
            seq += 1
            if burst < 100:
                time.sleep(0.005)  # a person saving files
        time.sleep(0.1)
    stream.close()
    t.join()

    s = stream.stats()
    print(f"{seq} change events; indexed {log['indexed']} files one by one, "
          f"{log['rescans']} full rescan(s), {log['covered']} events covered by a rescan")
    print(f"stats: produced={s.produced} consumed={s.consumed} peak_depth={s.peak_depth}; "
          f"{s.backpressure_events} overflows cleared {s.dropped_cleared} stale events")

if __name__ == "__main__":
    main()

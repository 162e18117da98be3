"""drop_oldest: always read the freshest values; stale ones are evicted.

Use policy="drop_oldest" for latest-value feeds (sensor readings, prices,
positions, UI state), where a reader that falls behind wants the newest data,
not a backlog of stale data. put() never blocks and never fails: when the
stream is full, the oldest item is evicted to make room for the new one.

Here a sensor thread publishes a reading every millisecond. A dashboard redraws
ten times a second and shows the mean of the newest 8 readings. It only ever
sees fresh readings, however long it spends drawing.
"""

import math
import threading
import time

import bpstream


def sensor(stream: bpstream.BoundedStream, stop: threading.Event) -> None:
    t0 = time.monotonic()
    while not stop.is_set():
        now = time.monotonic()
        stream.put((now, 20.0 + 5.0 * math.sin(now - t0)))  # (taken at, degrees C)
        time.sleep(0.001)


def main() -> None:
    stream = bpstream.BoundedStream(8, policy="drop_oldest")
    stop = threading.Event()
    t = threading.Thread(target=sensor, args=(stream, stop))
    t.start()
    for frame in range(8):
        time.sleep(0.1)  # the dashboard is busy drawing
        window = stream.get_many(8)  # the newest (up to) 8 readings, oldest first
        taken_at, latest = window[-1]
        mean = sum(value for _, value in window) / len(window)
        age_ms = (time.monotonic() - taken_at) * 1000
        print(f"frame {frame}: latest {latest:.2f} C ({age_ms:.1f} ms old), "
              f"mean of {len(window)} = {mean:.2f} C")
    stop.set()
    t.join()
    stream.close()

    s = stream.stats()
    print(f"\nsensor published {s.produced} readings; the dashboard used {s.consumed}; "
          f"{s.dropped_evicted} stale ones were evicted")
    print(f"peak depth {s.peak_depth} of {s.capacity}; the sensor never waited "
          f"(producer_waits={s.producer_waits})")
    print(f"produced == consumed + dropped + depth: "
          f"{s.produced} == {s.consumed} + {s.dropped} + {s.depth}")


if __name__ == "__main__":
    main()

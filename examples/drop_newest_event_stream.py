"""drop_newest: keep the backlog in order, shed new arrivals under overload.

Use policy="drop_newest" for event and log streams where what is already queued
matters more than what comes next: the start of an incident, the order of
events. put() never blocks; when the stream is full it returns False and the
new item is shed, so the producer can count (or log) its losses.

Here an application emits audit events; a shipper sends them to a collector in
batches of 100, one network round trip (20 ms) each. A burst of 2,000 events
overflows the 500-event buffer: the first events of the burst are kept, in
order, and the excess is shed and counted.
"""

import threading
import time

import bpstream


def shipper(stream: bpstream.BoundedStream, shipped: list) -> None:
    while True:
        try:
            batch = stream.get_many(100)
        except bpstream.Closed:  # closed and drained
            return
        time.sleep(0.02)  # POST the batch to the collector
        shipped.extend(batch)


def main() -> None:
    stream = bpstream.BoundedStream(500, policy="drop_newest")
    shipped: list = []
    t = threading.Thread(target=shipper, args=(stream, shipped))
    t.start()

    emitted = lost = 0
    for seq in range(2000):  # a burst: a failing login storm
        emitted += 1
        lost += not stream.put({"seq": seq, "event": "login_failed"})
    time.sleep(0.2)
    for seq in range(2000, 2010):  # back to normal: these all get through
        emitted += 1
        lost += not stream.put({"seq": seq, "event": "login_ok"})
    stream.close()
    t.join()

    seqs = [e["seq"] for e in shipped]
    print(f"emitted {emitted} events, shipped {len(shipped)}, shed {lost} (put() returned False)")
    print(f"shipped in order: {seqs == sorted(seqs)}; first {seqs[:3]}, last {seqs[-3:]}")
    s = stream.stats()
    print(f"stats: produced={s.produced} consumed={s.consumed} dropped_shed={s.dropped_shed} "
          f"peak_depth={s.peak_depth} backpressure_events={s.backpressure_events}")
    assert s.dropped_shed == lost and s.produced == s.consumed + s.dropped + s.depth


if __name__ == "__main__":
    main()

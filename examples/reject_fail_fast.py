"""reject: fail fast and let the caller decide what overload means.

Use policy="reject" for admission control: when the stream is full, put()
raises bpstream.Full at once (it is a queue.Full, so existing handlers work),
and the caller answers "503, try later", retries elsewhere, or degrades. No one
waits, nothing queued is lost, and the wait of an accepted item stays bounded by
the capacity.

Here requests arrive at ~2,000/s; two workers serve ~400/s. The front end admits
a request only if the work queue (20 slots) has room and turns the rest away
immediately, so admitted requests never wait long in the queue.
"""

import threading
import time

import bpstream


def worker(stream: bpstream.BoundedStream, waits: list) -> None:
    for arrived, _request_id in stream:  # ends once closed and drained
        waits.append(time.monotonic() - arrived)
        time.sleep(0.005)  # handle the request


def main() -> None:
    stream = bpstream.BoundedStream(20, policy="reject")
    waits: list = []
    workers = [threading.Thread(target=worker, args=(stream, waits)) for _ in range(2)]
    for w in workers:
        w.start()

    accepted = turned_away = 0
    for request_id in range(1000):
        try:
            stream.put((time.monotonic(), request_id))
            accepted += 1
        except bpstream.Full:
            turned_away += 1  # respond 503 Service Unavailable, right now
        time.sleep(0.0005)
    stream.close()
    for w in workers:
        w.join()

    s = stream.stats()
    print(f"requests: {accepted + turned_away}, accepted {accepted}, "
          f"turned away {turned_away} (503)")
    print(f"served {len(waits)}; queue wait of accepted requests: "
          f"max {max(waits) * 1e3:.0f} ms, mean {sum(waits) / len(waits) * 1e3:.0f} ms")
    print(f"stats: produced={s.produced} consumed={s.consumed} rejected={s.rejected} "
          f"dropped={s.dropped} peak_depth={s.peak_depth}/{s.capacity}")
    assert s.rejected == turned_away and s.produced == accepted and s.dropped == 0


if __name__ == "__main__":
    main()

"""Rate pacing attached to a stream (issue 9, section 2): policy="adaptive" (block paced by
an AIMD the stream drives with its own signals) and rate= with the rate controllers.

Timing bounds are generous (a noisy 2-core machine): the convergence test checks that a
producer far faster than its consumer ends near the consumer's pace with the stream never
full, not how fast it gets there (python/benchmarks measures that).
"""

import threading
import time

import pytest

import bpstream

HAVE_RATES = hasattr(bpstream, "AIMD") and hasattr(bpstream, "TokenBucket")
needs_rates = pytest.mark.skipif(not HAVE_RATES, reason="rate controllers not in this build")


def test_adaptive_policy_basics():
    s = bpstream.BoundedStream(100, "adaptive")
    assert s.policy is bpstream.Policy.ADAPTIVE
    assert s.policy == "adaptive"
    assert s.stats().rate_limit == 1000.0  # the default AIMD(1000, increase=100, window=0.1)
    assert bpstream.BoundedStream(100).stats().rate_limit is None
    s.put(1, timeout=1)
    assert s.get() == 1


def test_adaptive_put_nowait_takes_a_permit_or_fails_full():
    s = bpstream.BoundedStream(100_000, "adaptive")
    refused = 0
    for i in range(5000):  # far more than the burst: the rate refuses some
        try:
            s.put_nowait(i)
        except bpstream.Full:
            refused += 1
    st = s.stats()
    assert refused > 0
    assert st.rejected == refused
    assert st.depth == 5000 - refused


def test_adaptive_converges_on_a_slower_consumer():
    capacity = 1000
    s = bpstream.BoundedStream(capacity, "adaptive")
    stop = threading.Event()
    produced = [0]

    def produce():
        n = 0
        while not stop.is_set():
            try:
                s.put(n, timeout=0.5)
            except (bpstream.Full, bpstream.Closed):
                continue
            n += 1
        produced[0] = n

    consumed = [0]
    samples = []

    def consume():  # about 2000 items per second, in 10 ms slots
        start = next_slot = time.monotonic()
        while not stop.is_set():
            got = 0
            while got < 20:
                try:
                    s.get_nowait()
                except bpstream.Empty:
                    break
                got += 1
            consumed[0] += got
            samples.append((time.monotonic() - start, len(s), s.stats().rate_limit))
            next_slot += 0.01
            time.sleep(max(0.0, next_slot - time.monotonic()))

    threads = [threading.Thread(target=produce), threading.Thread(target=consume)]
    for t in threads:
        t.start()
    time.sleep(4.0)
    stop.set()
    for t in threads:
        t.join(10)
    st = s.stats()
    assert st.peak_depth < capacity, st  # never full
    # Settled near the consumer's pace: the limit followed it down from unbounded demand.
    late = [r for t, _, r in samples if t > 2.0]
    assert late and 200 < min(late) and max(late) < 20_000, (min(late), max(late))
    assert produced[0] < 4.0 * 20_000  # paced: a Python producer alone would put millions


@needs_rates
def test_rate_paces_puts_and_refuses_nowait_without_a_token():
    s = bpstream.BoundedStream(100, rate=bpstream.TokenBucket(50, 5))
    for i in range(5):
        s.put_nowait(i)
    with pytest.raises(bpstream.Full):
        s.put_nowait(5)
    start = time.monotonic()
    for i in range(5):
        s.put(i, timeout=5)
    assert time.monotonic() - start >= 0.07  # 5 more at 50/s: about 0.1 s
    st = s.stats()
    assert st.rate_limit == 50
    assert st.rejected == 1


@needs_rates
def test_adaptive_with_a_given_aimd():
    aimd = bpstream.AIMD(300, increase=10, window=0.1)
    s = bpstream.BoundedStream(100, "adaptive", rate=aimd)
    assert s.stats().rate_limit == 300
    with pytest.raises(TypeError):
        bpstream.BoundedStream(100, rate=object())

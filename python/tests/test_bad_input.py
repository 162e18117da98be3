"""Bad arguments raise the documented exception and change nothing."""

import math

import pytest

import bpstream
from support import POLICY_NAMES, counters, run_python


@pytest.mark.parametrize("capacity", [0, -1, -(2**100), 2**30 + 1, 2**63, 2**100])
def test_capacity_out_of_range(capacity):
    with pytest.raises(ValueError):
        bpstream.BoundedStream(capacity)


@pytest.mark.parametrize("capacity", [1.5, 8.0, "8", None, b"8", [8]])
def test_capacity_not_an_int(capacity):
    with pytest.raises(TypeError):
        bpstream.BoundedStream(capacity)


@pytest.mark.parametrize("capacity", [1, 2**30])
def test_capacity_bounds_are_accepted(capacity):
    s = bpstream.BoundedStream(capacity)
    assert s.capacity == capacity


def test_largest_capacity_does_not_reserve_memory():
    """capacity is a bound, not a preallocation: 2**30 slots would be 8 GiB."""
    proc = run_python(
        """
        import resource, bpstream
        s = bpstream.BoundedStream(2**30)
        s.put_many(range(1000))
        assert len(s) == 1000
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        """
    )
    assert proc.returncode == 0, proc.stderr
    max_rss_kib = int(proc.stdout.split()[-1])
    assert max_rss_kib < 512 * 1024, f"peak RSS {max_rss_kib} KiB"


def test_capacity_is_required():
    with pytest.raises(TypeError):
        bpstream.BoundedStream()


def test_capacity_by_keyword():
    assert bpstream.BoundedStream(capacity=5, policy="reject").capacity == 5


def test_unknown_keyword():
    with pytest.raises(TypeError):
        bpstream.BoundedStream(4, colour="blue")


@pytest.mark.parametrize("policy", ["fifo", "", "drop-oldest", "drop_oldest ", "blocking"])
def test_unknown_policy_lists_the_valid_names(policy):
    with pytest.raises(ValueError) as info:
        bpstream.BoundedStream(4, policy)
    message = str(info.value)
    for name in POLICY_NAMES:
        assert name in message, message


@pytest.mark.parametrize("policy", [None, 0, 3, 1.0, b"block"])
def test_policy_of_the_wrong_type(policy):
    with pytest.raises((TypeError, ValueError)):
        bpstream.BoundedStream(4, policy)


# ---------------------------------------------------------------------------- timeouts

BAD_TIMEOUTS = [-1, -0.001, -math.inf, math.nan]
TIMED_CALLS = {
    "put": lambda s, t: s.put("new", timeout=t),
    "get": lambda s, t: s.get(timeout=t),
    "put_many": lambda s, t: s.put_many(["new", "new"], timeout=t),
    "get_many": lambda s, t: s.get_many(2, timeout=t),
}


@pytest.mark.parametrize("timeout", BAD_TIMEOUTS, ids=["-1", "-0.001", "-inf", "nan"])
@pytest.mark.parametrize("call", sorted(TIMED_CALLS))
def test_bad_timeout_raises_and_changes_nothing(make_stream, call, timeout):
    s = make_stream(4)
    s.put("old")  # neither full nor empty: the call would succeed at once with a good timeout
    before = counters(s)
    with pytest.raises(ValueError):
        TIMED_CALLS[call](s, timeout)
    assert counters(s) == before
    assert s.get_nowait() == "old" and len(s) == 0


@pytest.mark.parametrize("timeout", ["1", b"1", [1], 1j])
@pytest.mark.parametrize("call", sorted(TIMED_CALLS))
def test_timeout_of_the_wrong_type(make_stream, call, timeout):
    s = make_stream(4)
    s.put("old")
    before = counters(s)
    with pytest.raises(TypeError):
        TIMED_CALLS[call](s, timeout)
    assert counters(s) == before


def test_queue_negative_timeout_changes_nothing():
    q = bpstream.Queue(2)
    q.put("old")
    before = counters(q)
    with pytest.raises(ValueError):
        q.put("new", timeout=-0.5)
    with pytest.raises(ValueError):
        q.get(timeout=-0.5)
    assert counters(q) == before


# ---------------------------------------------------------------------------- get_many


@pytest.mark.parametrize("max_items", [0, -1, -(2**70)])
def test_get_many_needs_a_positive_count(make_stream, max_items):
    s = make_stream(4)
    s.put("old")
    before = counters(s)
    with pytest.raises(ValueError):
        s.get_many(max_items)
    with pytest.raises(ValueError):
        s.get_many(max_items, timeout=0)
    assert counters(s) == before


@pytest.mark.parametrize("max_items", [1.0, "2", None])
def test_get_many_count_of_the_wrong_type(make_stream, max_items):
    s = make_stream(4)
    s.put("old")
    before = counters(s)
    with pytest.raises(TypeError):
        s.get_many(max_items)
    assert counters(s) == before


def test_get_many_huge_count_in_a_child():
    """A count near the size_t limit must not be used to size an allocation."""
    proc = run_python(
        """
        import sys, bpstream
        s = bpstream.BoundedStream(4)
        s.put_many([1, 2])
        print(s.get_many(sys.maxsize))
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[1, 2]"


# ------------------------------------------------------------------------ other misuse


def test_put_many_needs_an_iterable(make_stream):
    s = make_stream(4)
    before = counters(s)
    for bad in (None, 5, object()):
        with pytest.raises(TypeError):
            s.put_many(bad)
    assert counters(s) == before


def test_put_many_iterable_that_raises(make_stream):
    """The iterable's own error propagates; whatever it yielded before is accounted for."""

    class Boom(Exception):
        pass

    def items():
        yield 1
        yield 2
        raise Boom

    s = make_stream(8)
    with pytest.raises(Boom):
        s.put_many(items())
    st = s.stats()
    assert st.produced == st.depth == len(s)
    assert [s.get_nowait() for _ in range(len(s))] == [1, 2][: st.depth]


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_puts_on_a_closed_stream_change_nothing(make_stream, policy):
    s = make_stream(2, policy)
    s.put("old")
    s.close()
    before = counters(s)
    for call in (
        lambda: s.put("new"),
        lambda: s.put_nowait("new"),
        lambda: s.put("new", timeout=0),
        lambda: s.put_many(["new"]),
    ):
        with pytest.raises(bpstream.Closed):
            call()
    assert counters(s) == before
    assert list(s) == ["old"]


def test_read_only_properties(make_stream):
    s = make_stream(4)
    for name, value in (("capacity", 8), ("policy", "reject"), ("closed", True)):
        with pytest.raises(AttributeError):
            setattr(s, name, value)
    assert (s.capacity, s.policy, s.closed) == (4, "block", False)


def test_wrong_argument_counts(make_stream):
    s = make_stream(4)
    with pytest.raises(TypeError):
        s.put()
    with pytest.raises(TypeError):
        s.get_many()
    with pytest.raises(TypeError):
        s.put(1, 2, 3)
    assert counters(s)["produced"] == 0

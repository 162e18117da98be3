"""What a user sees when looking at the module and a stream: Stats, repr, len, properties,
Policy, docs, subclassing, weak references."""

import enum
import inspect
import math
import pydoc
import weakref

import pytest

import bpstream
from support import COUNTERS, POLICY_NAMES

STATS_FIELDS = (
    "produced",
    "consumed",
    "dropped",
    "dropped_shed",
    "dropped_evicted",
    "dropped_cleared",
    "dropped_on_close",
    "rejected",
    "depth",
    "peak_depth",
    "capacity",
    "backpressure_events",
    "producer_waits",
    "consumer_waits",
    "producer_wait_seconds",
    "consumer_wait_seconds",
    "unfinished_tasks",
    "produced_per_second",
    "consumed_per_second",
    "window_seconds",
    "closed",
    "flow_state",
    "throttle_events",
    "pause_events",
    "time_paused",
    "throttle_delay",
    "rate_limit",
    "recent_drop_rate",
)
PUBLIC_METHODS = ("put", "put_nowait", "get", "get_nowait", "put_many", "get_many", "close", "stats")


def test_module_surface():
    for name in ("Policy", "BoundedStream", "Queue", "Stats", "Full", "Empty", "Closed", "ShutDown"):
        assert hasattr(bpstream, name), name
    assert isinstance(bpstream.__version__, str) and bpstream.__version__
    assert bpstream.abi_version() == 3


# ------------------------------------------------------------------------------- Stats


def test_stats_is_a_named_tuple_like_structseq(make_stream):
    s = make_stream(8)
    s.put_many([1, 2, 3])
    st = s.stats()
    assert type(st) is bpstream.Stats
    assert isinstance(st, tuple)
    assert len(st) == len(STATS_FIELDS)
    for field in STATS_FIELDS:
        assert hasattr(st, field), field
    assert tuple(getattr(st, f) for f in STATS_FIELDS) == tuple(st)
    for field in COUNTERS:
        assert type(getattr(st, field)) is int, field
    for field in ("producer_wait_seconds", "consumer_wait_seconds", "produced_per_second",
                  "consumed_per_second", "window_seconds"):
        value = getattr(st, field)
        assert type(value) is float and math.isfinite(value) and value >= 0, (field, value)
    assert st.capacity == 8 and st.closed is False
    assert "produced=3" in repr(st)


def test_stats_is_a_snapshot(make_stream):
    s = make_stream(8)
    before = s.stats()
    s.put(1)
    assert before.produced == 0 and s.stats().produced == 1


def test_stats_capacity_none_when_unbounded():
    assert bpstream.Queue().stats().capacity is None
    assert bpstream.Queue(5).stats().capacity == 5


def test_stats_rates_see_recent_traffic(make_stream):
    s = make_stream(1000)
    s.put_many(range(500))
    for _ in range(500):
        s.get()
    st = s.stats()
    assert st.produced_per_second > 0 and st.consumed_per_second > 0
    assert st.window_seconds > 0


def test_stats_closed_flag(make_stream):
    s = make_stream(2)
    s.close()
    assert s.stats().closed is True


# ------------------------------------------------------------------------ the stream


def test_repr(make_stream):
    s = make_stream(8)
    s.put_many([1, 2, 3])
    assert repr(s) == "<bpstream.BoundedStream capacity=8 policy='block' depth=3 closed=False>"
    s.close()
    assert repr(s) == "<bpstream.BoundedStream capacity=8 policy='block' depth=3 closed=True>"
    r = repr(make_stream(2, "drop_oldest"))
    assert "policy='drop_oldest'" in r and "depth=0" in r


def test_len_follows_depth(make_stream):
    s = make_stream(4, "drop_oldest")
    assert len(s) == 0
    s.put_many(range(6))
    assert len(s) == 4 == s.stats().depth
    s.get()
    assert len(s) == 3


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_policy_property_is_a_policy_member(make_stream, policy):
    s = make_stream(4, policy)
    assert isinstance(s.policy, bpstream.Policy)
    assert s.policy == policy
    assert s.policy is bpstream.Policy(policy)


@pytest.mark.parametrize("member", list(bpstream.Policy))
def test_constructor_accepts_policy_members(member):
    s = bpstream.BoundedStream(4, member)
    assert s.policy is member


def test_policy_enum():
    # "adaptive" (issue 9: block paced by an AIMD) is tested in test_adaptive.py, not
    # with the overflow policies of POLICY_NAMES.
    names = list(POLICY_NAMES) + ["adaptive"]
    assert [m.value for m in bpstream.Policy] == names
    assert [m.name for m in bpstream.Policy] == [n.upper() for n in names]
    assert issubclass(bpstream.Policy, str) and issubclass(bpstream.Policy, enum.Enum)
    assert bpstream.Policy.BLOCK == "block"
    assert str(bpstream.Policy.DROP_OLDEST) == "drop_oldest"
    assert f"{bpstream.Policy.REJECT}" == "reject"


def test_default_policy_is_block():
    assert bpstream.BoundedStream(2).policy is bpstream.Policy.BLOCK
    assert bpstream.Queue(2).policy is bpstream.Policy.BLOCK


def test_capacity_property(make_stream):
    assert make_stream(7).capacity == 7


def test_help_documents_the_methods():
    text = pydoc.render_doc(bpstream.BoundedStream, renderer=pydoc.plaintext)
    for name in PUBLIC_METHODS:
        doc = inspect.getdoc(getattr(bpstream.BoundedStream, name))
        assert doc and len(doc) >= 10, f"{name} has no docstring"
        assert name in text
        assert doc.splitlines()[0].strip() in text, name
    assert inspect.getdoc(bpstream.BoundedStream)
    assert inspect.getdoc(bpstream.Queue)


def test_subclass_without_init():
    class Counting(bpstream.BoundedStream):
        def put_twice(self, item):
            return self.put(item) and self.put(item)

    s = Counting(4, policy="reject")
    s.note = "instances of subclasses take attributes"
    assert s.put_twice("x") is True
    assert s.get_many(5) == ["x", "x"]
    assert s.note.startswith("instances")


def test_subclass_with_its_own_init():
    class Tagged(bpstream.BoundedStream):
        def __init__(self, capacity, tag):
            super().__init__(capacity, "drop_oldest")
            self.tag = tag

        def put_twice(self, item):
            return self.put(item) and self.put(item)

    s = Tagged(2, tag="t")
    assert s.tag == "t" and s.capacity == 2 and s.policy == "drop_oldest"
    assert s.put_twice("x") is True
    assert list(s.get_many(5)) == ["x", "x"]
    assert isinstance(s, bpstream.BoundedStream)


def test_weak_references_to_streams():
    s = bpstream.BoundedStream(2)
    ref = weakref.ref(s)
    assert ref() is s
    del s
    assert ref() is None
    q = bpstream.Queue()
    qref = weakref.ref(q)
    del q
    assert qref() is None

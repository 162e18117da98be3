"""Running out of memory in the native path is an exception, never an abort.

Each test runs a child interpreter whose address space is capped (RLIMIT_AS) a little above
what it uses, then fills a stream whose bound (2**30) is far beyond that: the core's buffer
grows until an allocation fails. The put that hits it must raise MemoryError and leave its
item with the caller; the stream stays whole and usable, and the child exits normally
(before the core reported allocation failures, the Swift runtime aborted the process:
SIGTRAP/SIGILL/SIGABRT).
"""

import signal
import sys

import pytest

from support import run_python

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc/self/status: Linux"
)

# The child: cap the address space at what it uses now plus HEADROOM, then run BODY.
PRELUDE = """
import gc, itertools, resource, sys
import bpstream

def address_space():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024

limit = address_space() + 256 * 2**20
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
item = object()   # one object put again and again: Python allocates nothing per put

def check_identity(s):
    st = s.stats()
    assert st.produced == st.consumed + st.dropped + st.depth, st
    return st
"""


def run_capped(body):
    proc = run_python(PRELUDE + body, timeout=240)
    died = (
        f" (killed by {signal.Signals(-proc.returncode).name})" if proc.returncode < 0 else ""
    )
    assert proc.returncode == 0, (
        f"child exited with {proc.returncode}{died}\nstdout: {proc.stdout[-2000:]}\n"
        f"stderr: {proc.stderr[-2000:]}"
    )
    assert proc.stdout.strip().endswith("OK"), proc.stdout
    return proc.stdout


def test_put_that_cannot_grow_the_buffer_raises_memory_error():
    out = run_capped("""
s = bpstream.BoundedStream(2**30)
stored = 0
try:
    while True:
        s.put_nowait(item)
        stored += 1
except MemoryError:
    pass
assert stored > 1_000_000, stored          # it grew a good way first
assert len(s) == stored, (len(s), stored)  # the failed put stored nothing
st = check_identity(s)
assert st.produced == stored and st.rejected == 0 and st.dropped == 0, st
assert sys.getrefcount(item) == stored + 2, "the failed put kept no reference"
# Still usable: items come out in order, room taken by gets is used again at once.
assert s.get_nowait() is item and s.get_nowait() is item
assert s.put(item, timeout=0) is True
got = 0
while True:
    batch = s.get_many(1_000_000, timeout=0) if len(s) else []
    if not batch:
        break
    got += len(batch)
    del batch
assert got == stored - 1, (got, stored)
st = check_identity(s)
assert st.depth == 0 and st.consumed == stored + 1, st
s.close()
print(stored, "OK")
""")
    assert int(out.split()[0]) > 1_000_000


def test_put_many_that_cannot_grow_the_buffer_raises_memory_error_with_accepted():
    run_capped("""
s = bpstream.BoundedStream(2**30)
try:
    s.put_many(itertools.repeat(item))
    raise AssertionError("an endless put_many returned")
except MemoryError as e:
    accepted = e.accepted
assert accepted > 1_000_000, accepted
assert len(s) == accepted, (len(s), accepted)
assert sys.getrefcount(item) == accepted + 2, "items not put were given back"
check_identity(s)
taken = s.get_many(1000, timeout=0)
assert len(taken) == 1000 and all(x is item for x in taken)
assert s.put_many([item] * 10, timeout=0) == 10, "the room a get made is usable"
del taken
check_identity(s)
# Iteration and close still work on the full-to-the-brim stream.
it = iter(s)
assert next(it) is item
s.close(immediate=True)
assert list(it) == []
check_identity(s)
print("OK")
""")


def test_drop_all_clears_a_backlog_that_filled_the_memory():
    # drop_all hands the whole backlog over at once and starts a fresh, small buffer: with
    # the memory nearly all used, clearing still works and the stream keeps going.
    run_capped("""
q = bpstream.Queue(2**30, policy="drop_all")
try:
    q.put_many(itertools.repeat(item))
except MemoryError as e:
    accepted = e.accepted
assert q.qsize() == accepted > 1_000_000
q.maxsize = accepted            # full now: the next put clears the backlog
q.put_nowait(item)
assert q.qsize() == 1
st = check_identity(q)
assert st.dropped_cleared == accepted, st
assert sys.getrefcount(item) == 1 + 2, "every cleared item was released"
q.maxsize = 2**30
assert q.put_many([item] * 100_000, timeout=0) == 100_000
check_identity(q)
print("OK")
""")

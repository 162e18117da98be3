"""The GIL rule: a Python object is touched only by a thread that holds the GIL.

Python objects the stream drops on its own are released on the thread whose call dropped
them; when that is a native thread (a reader, or a producer using the C API capsule) it
must take the GIL first, and once the interpreter has begun to exit it must not touch
Python at all. Breaking the rule crashes at random (a `__del__` running beside a Python
thread, refcounts torn), so every scenario runs in a child interpreter: a crash fails the
test instead of killing the run, and the child reports what it observed.
"""

import sys
import textwrap

import pytest

from support import run_python

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /dev/zero")

# In each child: D counts its live instances; __del__ does real work (allocates, runs
# bytecode), which is what crashes when it runs without the GIL next to a Python thread.
PRELUDE = """
import gc, sys, threading, time
import bpstream

class D:
    live = 0
    def __init__(self):
        D.live += 1
    def __del__(self):
        [i for i in range(50)]
        D.live -= 1
"""


def run_child(code, timeout=120):
    proc = run_python(PRELUDE + textwrap.dedent(code), timeout=timeout)
    assert proc.returncode == 0, f"child died ({proc.returncode})\n{proc.stdout}\n{proc.stderr}"
    assert "Fatal Python error" not in proc.stderr, proc.stderr
    return proc.stdout


def test_a_reader_evicting_objects_put_from_python():
    """The report's program: a native reader floods a drop_oldest stream while the main
    thread puts objects; the reader evicts most of them (300,000 puts here)."""
    out = run_child("""
        s = bpstream.read_chunks("/dev/zero", size=8, capacity=4, policy="drop_oldest")
        for i in range(300_000):
            s.put(D())
        s.close(immediate=True)
        del s
        gc.collect()
        print("live", D.live)
    """)
    assert "live 0" in out, out


def test_refcounts_are_exact_after_thousands_of_native_evictions():
    """The same 64 objects are put again and again; the reader evicts them. Afterwards each
    has exactly the references it had before: none released twice, none leaked."""
    out = run_child("""
        items = [D() for _ in range(64)]
        base = [sys.getrefcount(items[i]) for i in range(len(items))]
        s = bpstream.read_chunks("/dev/zero", size=8, capacity=8, policy="drop_oldest")
        for round in range(2000):
            for x in items:
                s.put(x)
        s.close(immediate=True)
        st = s.stats()
        del s
        gc.collect()
        del x  # the loop variable's reference
        deltas = [sys.getrefcount(items[i]) - base[i] for i in range(len(items))]
        print("deltas", sorted(set(deltas)))
        print("evicted", st.dropped_evicted > 10_000)
        items.clear()
        print("live", D.live)
    """)
    assert "deltas [0]" in out, out
    assert "evicted True" in out, out
    assert "live 0" in out, out


def test_a_native_c_api_producer_evicting_objects_put_from_python(tokens):
    """The C API variant: tokens.count (a pthread with no GIL, put_frames) evicts objects a
    Python thread keeps putting into the same drop_oldest stream."""
    out = run_child(f"""
        import importlib.util
        spec = importlib.util.spec_from_file_location("tokens", {tokens.__file__!r})
        tokens = importlib.util.module_from_spec(spec); spec.loader.exec_module(tokens)
        s = bpstream.BoundedStream(4, "drop_oldest")
        p = tokens.count(s, 10**12, batch=8)
        puts = 0
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            for _ in range(1000):
                s.put(D())
            puts += 1000
        s.close(immediate=True)
        assert p.join(10)
        del s
        gc.collect()
        print("live", D.live, "puts", puts)
    """)
    assert "live 0" in out, out


def test_interpreter_exit_while_a_reader_evicts_a_large_backlog_of_objects():
    """A reader starts evicting 50,000 objects (each eviction takes the GIL) just as the
    interpreter exits: the exit must not wait for it, and the reader must not touch the
    objects once exit has begun."""
    for run in range(5):
        run_child("""
            import os
            s = bpstream.BoundedStream(50_000, "drop_oldest")
            s.put_many([D() for _ in range(50_000)])
            s._start_reader(os.open("/dev/zero", os.O_RDONLY | os.O_CLOEXEC), False, 8)
            print("exiting")
        """)


@pytest.mark.parametrize("source", ["reader", "c_api"])
def test_interpreter_exit_while_a_native_thread_evicts_objects(tokens, source):
    """The interpreter exits while a native thread keeps evicting Python objects (with
    __del__ doing work): ten runs each; every one must exit cleanly (status 0, no fatal
    error). After exit begins, the native thread must not take the GIL or touch objects."""
    start = (
        's = bpstream.read_chunks("/dev/zero", size=8, capacity=4, policy="drop_oldest")'
        if source == "reader"
        else f"""import importlib.util
spec = importlib.util.spec_from_file_location("tokens", {tokens.__file__!r})
tokens = importlib.util.module_from_spec(spec); spec.loader.exec_module(tokens)
s = bpstream.BoundedStream(4, "drop_oldest")
p = tokens.count(s, 10**12, batch=8)"""
    )
    for run in range(10):
        run_child(start + """
def feed():
    while True:
        s.put(D())
threading.Thread(target=feed, daemon=True).start()
for i in range(20_000):
    s.put(D())
print("exiting")
""")


def test_interpreter_exit_while_a_native_reader_fires_flow_callbacks():
    """A native reader's puts make flow transitions whose Python listener (doing Python
    work) must take the GIL from the reader's thread, while a daemon consumer keeps the
    state moving; the interpreter exits mid-stream. Every run must exit cleanly: after
    exit begins, the reader must not run the callback (the atexit handshake)."""
    for run in range(5):
        run_child("""
            s = bpstream.read_chunks("/dev/zero", size=8, capacity=10, policy="block")
            seen = []
            s.on_flow_change(lambda old, new, fill: seen.append((D(), str(new))))
            def consume():
                for _ in s:
                    pass
            threading.Thread(target=consume, daemon=True).start()
            while len(seen) < 200:
                time.sleep(0.001)
            print("exiting")
        """)

"""fork() with streams alive: a child never hangs or crashes because of streams it
inherited, and can use them.

- Every stream's lock is taken around the fork (the core's pthread_atfork handlers), so a
  native thread inside a stream's lock at the fork leaves nothing locked in the child.
- The child holds the items buffered at the fork. A stream fed by a native thread of the
  parent (a reader, or native code holding a C API handle) is closed in the child, since
  that thread does not exist there: its consumers drain and stop.
- The child's main thread answers Ctrl-C in a blocked call, whichever thread forked.

Children run under a deadline and are killed when they overrun, so a hang fails the test.
"""

import os
import signal
import sys
import textwrap
import time

import pytest

from support import Child, run_python

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")

CHILD_DEADLINE = 10.0


def wait_child(pid, within=CHILD_DEADLINE):
    """The child's exit code; kill it and fail if it runs longer than `within`."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.002)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"child {pid} hung (killed after {within}s)")


def run_forking_child(code, timeout=45):
    """Run `code` in a fresh interpreter (forking from pytest's own process would fork its
    threads' state too); it prints lines the test checks."""
    proc = run_python(textwrap.dedent(code), timeout=timeout)
    assert proc.returncode == 0, f"{proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def load_tokens(tokens):
    return f"""
import importlib.util
spec = importlib.util.spec_from_file_location("tokens", {tokens.__file__!r})
tokens = importlib.util.module_from_spec(spec); spec.loader.exec_module(tokens)
"""


START_PRODUCER = {
    # A C API producer (tokens.count, batches of 8).
    "c_api": """
s = bpstream.BoundedStream(64, "drop_oldest")
p = tokens.count(s, 10**12, batch=8)
def stop():
    s.close(immediate=True)
    assert p.join(10)
""",
    # A native reader of /dev/zero (8-byte chunks), whose fds must not outlive it in a child.
    "reader": """
s = bpstream.read_chunks("/dev/zero", size=8, capacity=64, policy="drop_oldest")
def stop():
    s.close()
""",
}


@pytest.mark.parametrize("source", ["c_api", "reader"])
def test_fork_while_a_native_producer_holds_the_lock(tokens, source):
    """A native producer hammers a drop_oldest stream's lock; 30 forks. Each child collects
    garbage (traversal takes the stream's lock), finds the stream closed (its producer
    stayed in the parent), drains what was buffered at the fork and exits. The identity
    holds in the child, and a reader's fds are closed there."""
    out = run_forking_child(load_tokens(tokens) + "import gc, os, time, bpstream\n"
                            + 'fds_before = len(os.listdir("/proc/self/fd"))\n'
                            + START_PRODUCER[source] + textwrap.dedent("""
        while s.stats().produced < 1000:
            time.sleep(0.001)
        results = []
        for _ in range(30):
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    gc.collect()
                    depth = len(s)
                    got = list(s)                      # ends: closed in the child
                    st = s.stats()
                    ok = (s.closed and len(got) == depth <= 64
                          and st.produced == st.consumed + st.dropped + st.depth
                          and len(os.listdir("/proc/self/fd")) <= fds_before)
                    code = 0 if ok else 3
                finally:
                    os._exit(code)
            deadline = time.monotonic() + 10
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    results.append(os.waitstatus_to_exitcode(status))
                    break
                if time.monotonic() > deadline:
                    os.kill(pid, 9); os.waitpid(pid, 0); results.append("hung")
                    break
                time.sleep(0.002)
        stop()
        print("results", sorted(set(map(str, results))))
    """))
    assert "results ['0']" in out, out


def test_the_parent_is_untouched_by_its_childs_close(tokens):
    """The child closes its copy of a native-fed stream; the parent's stream stays open
    and its producer goes on."""
    out = run_forking_child(load_tokens(tokens) + textwrap.dedent("""
        import os, time, bpstream
        s = bpstream.BoundedStream(16)
        p = tokens.count(s, 10**12, batch=4)
        pid = os.fork()
        if pid == 0:
            os._exit(0 if s.closed else 1)
        _, status = os.waitpid(pid, 0)
        before = s.stats().consumed
        got = [s.get(timeout=5) for _ in range(1000)]
        print("child", os.waitstatus_to_exitcode(status), "parent open", not s.closed,
              "got", len(got))
        s.close(immediate=True)
        assert p.join(10)
    """))
    assert "child 0 parent open True got 1000" in out, out


def test_a_python_fed_stream_stays_open_and_usable_in_the_child():
    """A stream nobody native feeds is the child's to use: its buffered items are there,
    it is open, puts and gets work, and a get that must wait times out normally."""
    out = run_forking_child("""
        import os, bpstream
        s = bpstream.BoundedStream(8)
        s.put_many(range(5))
        it = iter(s); next(it)          # a read-ahead holds 1..4 at the fork
        pid = os.fork()
        if pid == 0:
            ok = (not s.closed and s.get() == 1 and s.put(99) and
                  list(s.get_many(10)) == [2, 3, 4, 99])
            try:
                s.get(timeout=0.05); ok = False
            except bpstream.Empty:
                pass
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        print("child", os.waitstatus_to_exitcode(status), "parent", list(s.get_many(10)))
    """)
    assert "child 0 parent [1, 2, 3, 4]" in out, out


def test_multiprocessing_fork_workers_with_a_native_producer_running(tokens):
    """multiprocessing's fork start method, the real-world case: a Pool's workers are
    forked (some while the producer holds the lock), collect garbage, and finish their
    tasks; a worker Process iterates the inherited stream to its end."""
    out = run_forking_child(load_tokens(tokens) + textwrap.dedent("""
        import gc, multiprocessing as mp, bpstream
        s = bpstream.BoundedStream(32, "drop_oldest")
        p = tokens.count(s, 10**12, batch=8)

        def work(x):
            gc.collect()
            return x * 2

        def drain(conn):
            conn.send(len(list(s)))

        if __name__ == "__main__":
            ctx = mp.get_context("fork")
            with ctx.Pool(2, maxtasksperchild=1) as pool:     # workers replaced per task
                result = pool.map_async(work, range(20)).get(timeout=60)
            parent_end, child_end = ctx.Pipe()
            proc = ctx.Process(target=drain, args=(child_end,))
            proc.start()
            drained = parent_end.recv() if parent_end.poll(30) else None
            proc.join(30)
            s.close(immediate=True)
            assert p.join(10)
            print("pool", result == [x * 2 for x in range(20)], "drained", drained is not None
                  and drained <= 32, "exit", proc.exitcode)
    """))
    assert "pool True drained True exit 0" in out, out


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_reaches_a_blocked_get_in_a_child_forked_from_another_thread():
    """multiprocessing.Pool forks replacement workers from a helper thread; in such a child
    the forking thread is the main thread, and a blocked get must answer Ctrl-C."""
    child = Child("""
        import os, sys, threading, time, bpstream
        s = bpstream.BoundedStream(4)
        def fork_here():
            pid = os.fork()
            if pid == 0:
                print("child", os.getpid(), flush=True)
                try:
                    s.get()                    # blocks: nothing is ever put
                except KeyboardInterrupt:
                    print("interrupted", flush=True)
                    os._exit(0)
                os._exit(2)
            _, status = os.waitpid(pid, 0)
            print("status", os.waitstatus_to_exitcode(status), flush=True)
        t = threading.Thread(target=fork_here)
        t.start(); t.join()
    """)
    try:
        deadline = time.monotonic() + 30
        pid = None
        while pid is None and time.monotonic() < deadline:
            line = child.lines.get(timeout=30)
            assert line is not None, child.describe()
            if line.startswith("child "):
                pid = int(line.split()[1])
        time.sleep(0.2)                        # let it block in get()
        os.kill(pid, signal.SIGINT)
        child.wait_for_line("interrupted", within=5)
        child.wait_for_line("status 0", within=5)
        assert child.wait(10) == 0
    finally:
        child.kill()

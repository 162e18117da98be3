"""pytest configuration for the bpstream suite.

Run from the repository root with `PYTHONPATH=python python3 -m pytest python/tests -q`
(or `make test`). Helpers live in support.py; fixtures live here.
"""

import faulthandler
import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

try:
    import bpstream
except ImportError:
    # Not installed and no PYTHONPATH: fall back to the in-tree package (python/bpstream).
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import bpstream

from support import Interrupted


def pytest_report_header(config):
    return f"bpstream {bpstream.__version__} from {bpstream.__file__}"


# A test still running after this long is hung (the slowest takes a few seconds): dump every
# thread's stack and exit, rather than leave CI waiting forever on a blocked call. The dump
# goes to a copy of the real stderr taken before pytest's capturing can redirect fd 2.
HANG_SECONDS = 60
_hang_report = None


def pytest_configure(config):
    global _hang_report
    _hang_report = os.fdopen(os.dup(sys.__stderr__.fileno()), "w")


def pytest_unconfigure(config):
    if _hang_report is not None:
        _hang_report.close()


@pytest.fixture(autouse=True)
def hang_guard():
    if _hang_report is None:
        yield
        return
    faulthandler.dump_traceback_later(HANG_SECONDS, exit=True, file=_hang_report)
    yield
    faulthandler.cancel_dump_traceback_later()


ROOT = Path(__file__).resolve().parents[2]
BUILD_PY = ROOT / "examples" / "native_producer" / "build.py"


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tokens(tmp_path_factory):
    """The example native producer (examples/native_producer/tokens.c: a pthread feeding a
    stream through the C API capsule), compiled once into a temporary folder and imported.
    `tokens.__file__` lets a child interpreter import it too."""
    builder = _load("bpstream_example_build", BUILD_PY)
    out = tmp_path_factory.mktemp("tokens")
    try:
        path = builder.build(str(out))
    except FileNotFoundError as exc:  # no C compiler on this machine
        pytest.skip(f"cannot build the example extension: {exc}")
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"examples/native_producer/tokens.c does not compile: {exc}")
    module = _load("tokens", path)
    sys.modules.setdefault("tokens", module)
    return module


@pytest.fixture
def make_stream():
    """BoundedStream factory; every stream made is closed immediately at teardown, so a
    daemon thread left blocked by a failing test is released."""
    made = []

    def make(capacity=3, policy="block"):
        stream = bpstream.BoundedStream(capacity, policy)
        made.append(stream)
        return stream

    yield make
    for stream in made:
        stream.close(immediate=True)


@pytest.fixture
def interrupter():
    """interrupter(after) -> a record whose `sent_at` is set when SIGUSR1 reaches the main
    thread `after` seconds later; the handler raises Interrupted. Main thread only.

    A custom signal and exception (not SIGINT) so that a product bug cannot abort the
    whole pytest session with a stray KeyboardInterrupt.
    """
    assert threading.current_thread() is threading.main_thread()
    main_ident = threading.main_thread().ident

    def handler(signum, frame):
        raise Interrupted

    previous = signal.signal(signal.SIGUSR1, handler)
    timers = []

    class Shot:
        sent_at = None

    def arm(after):
        shot = Shot()

        def fire():
            shot.sent_at = time.monotonic()
            signal.pthread_kill(main_ident, signal.SIGUSR1)

        timer = threading.Timer(after, fire)
        timer.daemon = True
        timers.append(timer)
        timer.start()
        return shot

    try:
        yield arm
    finally:
        for timer in timers:
            timer.cancel()
            timer.join()
        signal.signal(signal.SIGUSR1, previous)

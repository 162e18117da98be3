"""CPython's own asyncio.Queue tests (Lib/test/test_asyncio/test_queues.py), run against
bpstream.AsyncQueue the way a third-party class is substituted.

The test file is read from the installed CPython (never copied into this repository):

- the running Python's own, from its stdlib `test` package, when that is installed;
- Python 3.13's as well, when this Python is older and a 3.13 stdlib sits beside it (a
  pyenv layout): it adds the shutdown tests (_QueueShutdownTestMixin). Its code needs
  nothing newer than 3.11 (asyncio.TaskGroup, asyncio.timeout).

Each file is loaded as a private module copy whose global `asyncio` is a stand-in: the
real asyncio, except `Queue` is bpstream.AsyncQueue (and `QueueShutDown` is bpstream.Closed
where asyncio has none). The test classes that construct asyncio.Queue run here, under
new names; LifoQueue and PriorityQueue ones do not (bpstream has no such orders).
"""

from __future__ import annotations

import asyncio
import glob
import importlib.util
import os
import sys
import sysconfig
import types
import unittest

import bpstream

# Tests that read asyncio.Queue's private state or repr details, with why.
SKIPPED = {
    "test_repr": "asserts asyncio.Queue's repr internals (_getters[1], _putters[1], _queue=[1])",
    "test_str": "asserts asyncio.Queue's str internals (_getters[1], _putters[1], _queue=[1])",
    "test_get_with_putters": "appends a future to the private q._putters",
    "test_cancelled_getters_not_being_held_in_self_getters": "reads the private q._getters",
    "test_cancelled_puts_not_being_held_in_self_putters": "reads the private q._putters",
}
# _QueueJoinTestMixin.test_format sets the private q._unfinished_tasks; the shutdown
# mixin's test_format (q._format() == 'maxsize=0 shutdown') runs: AsyncQueue keeps _format.
SKIPPED_IN = {("QueueJoinTests", "test_format"): "sets the private q._unfinished_tasks"}

RUN = ["QueueBasicTests", "QueueGetTests", "QueuePutTests", "QueueJoinTests",
       "QueueShutdownTests"]


def _stand_in_asyncio() -> types.ModuleType:
    module = types.ModuleType("asyncio")
    module.__dict__.update(asyncio.__dict__)
    module.Queue = bpstream.AsyncQueue
    if not hasattr(asyncio, "QueueShutDown"):
        module.QueueShutDown = bpstream.Closed
    return module


def _sources() -> list[tuple[str, str]]:
    """(tag, path) of each test_queues.py to run."""
    found = []
    own = os.path.join(sysconfig.get_paths()["stdlib"], "test", "test_asyncio", "test_queues.py")
    if os.path.exists(own):
        found.append((f"py{sys.version_info[0]}{sys.version_info[1]}", own))
    if sys.version_info < (3, 13):
        # A pyenv-style tree: <versions>/<this version>/lib/pythonX.Y -> <versions>/3.13.*/...
        versions = os.path.dirname(os.path.realpath(sys.base_prefix))
        pattern = os.path.join(versions, "3.13*", "lib", "python3.13", "test", "test_asyncio",
                               "test_queues.py")
        newer = sorted(glob.glob(pattern))
        if newer:
            found.append(("py313", newer[-1]))
    return found


def _load(tag: str, path: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(f"_cpython_test_queues_{tag}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.asyncio = _stand_in_asyncio()
    return module


def _skip(reason: str):
    @unittest.skip(reason)
    def skipped(self):
        pass

    return skipped


def _adopt(tag: str, module: types.ModuleType) -> list[str]:
    """Defines Test<tag>_<Class> here for each class in RUN the module has."""
    names = []
    for class_name in RUN:
        base = getattr(module, class_name, None)
        if base is None:
            continue
        namespace = {"__module__": __name__}
        if "q_class" in vars(base) or hasattr(base, "q_class"):
            namespace["q_class"] = bpstream.AsyncQueue
        for attr in dir(base):
            if not attr.startswith("test"):
                continue
            reason = SKIPPED_IN.get((class_name, attr)) or SKIPPED.get(attr)
            if reason:
                namespace[attr] = _skip(reason)
        name = f"TestCPython{tag}_{class_name}"
        globals()[name] = type(name, (base,), namespace)
        names.append(name)
    return names


ADOPTED = []
for _tag, _path in _sources():
    ADOPTED += _adopt(_tag, _load(_tag, _path))


def test_cpython_suites_were_found():
    """The running Python's test_queues.py is there (the `test` package is installed):
    otherwise this module would silently test nothing."""
    if not _sources():
        import pytest

        pytest.skip("this Python has no stdlib test package (test/test_asyncio/test_queues.py)")
    assert ADOPTED, "test_queues.py found but no test class adopted"
    assert any(name.endswith("_QueueGetTests") for name in ADOPTED)

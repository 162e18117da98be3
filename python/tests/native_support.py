"""Helpers for the tests of native producers (the example `tokens` extension) and native
readers (read_lines / read_chunks): thread and file-descriptor accounting, and polling.

A native thread the product forgot to join, or an fd it forgot to close, is invisible to
Python; /proc/self/task and /proc/self/fd show both. Counts are compared to a baseline
taken inside the test, after the test's own fixtures (pipes, sockets) exist, and are given
a generous time to settle, since a thread may take a moment to be reaped after it ends.
"""

from __future__ import annotations

import gc
import os
import sys
import time

import pytest

from support import WAKE_WITHIN

if not sys.platform.startswith("linux"):
    pytest.skip("thread and fd accounting reads /proc/self (Linux)", allow_module_level=True)

# How long counts may take to come back to their baseline.
SETTLE_WITHIN = 5.0


def thread_count() -> int:
    return len(os.listdir("/proc/self/task"))


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def wait_until(predicate, within=WAKE_WITHIN, interval=0.005):
    """Poll predicate() until it is true; return its last value (false after `within`)."""
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


class Resources:
    """Thread and fd counts at construction; `assert_back()` waits for them to return.

        res = Resources()
        ... start and stop native threads ...
        res.assert_back()
    """

    def __init__(self):
        gc.collect()
        self.threads = thread_count()
        self.fds = fd_count()

    def now(self):
        return thread_count(), fd_count()

    def assert_back(self, within=SETTLE_WITHIN):
        """No more threads or fds than at the baseline. (Fewer is allowed: a daemon thread
        an earlier test left behind may end meanwhile; assert_grew shows that the counts
        did move while the native thread ran.)"""

        def settled():
            gc.collect()
            threads, fds = self.now()
            return threads <= self.threads and fds <= self.fds

        wait_until(settled, within, interval=0.02)
        threads, fds = self.now()
        assert threads <= self.threads, f"threads: {self.threads} before, {threads} after"
        assert fds <= self.fds, f"fds: {self.fds} before, {fds} after: {sorted(os.listdir('/proc/self/fd'))}"

    def assert_grew(self, threads=0, fds=0):
        """While something runs: at least this many more threads / fds than the baseline
        (proves the baseline check afterwards is measuring something)."""
        now_threads, now_fds = self.now()
        assert now_threads >= self.threads + threads, (self.threads, now_threads)
        assert now_fds >= self.fds + fds, (self.fds, now_fds)

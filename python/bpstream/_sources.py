"""Native sources: a reader thread (Swift, no GIL) reads a file descriptor into a stream.

The reader frames what it reads (one ``bytes`` per line, or per read) and puts each frame
into a ``BoundedStream``, waiting as the stream's policy says: with ``block`` a slow
consumer stops the reader, so a pipe's writer is held back too (backpressure across
processes); with ``drop_oldest`` the consumer always sees the freshest data.
"""

from __future__ import annotations

import os
from typing import IO, Union

from ._bpstream import BoundedStream

Source = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]", int, IO[bytes], IO[str]]


def _open_source(source: Source) -> int:
    """Returns a file descriptor the reader will own (and close): a path is opened here,
    so a missing one raises at once; an fd or a file object's fd is duplicated, so the
    caller keeps (and closes) its own."""
    if isinstance(source, bool):
        raise TypeError("source must be a path, a file descriptor or a file object, not bool")
    if isinstance(source, int):
        return os.dup(source)
    if isinstance(source, (str, bytes, os.PathLike)):
        return os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    fileno = getattr(source, "fileno", None)
    if fileno is None:
        raise TypeError(
            "source must be a path, a file descriptor or a file object with fileno(), "
            f"not {type(source).__name__}"
        )
    return os.dup(fileno())


def _start(source: Source, capacity: int, policy: str, lines: bool, size: int) -> BoundedStream:
    if not isinstance(size, int) or isinstance(size, bool) or size < 1 or size > 1 << 30:
        raise ValueError(f"size must be an int between 1 and {1 << 30}, got {size!r}")
    stream = BoundedStream(capacity, policy)  # validates capacity and policy first
    fd = _open_source(source)
    stream._start_reader(fd, lines, size)  # owns fd from here on, even if it raises
    return stream


def read_lines(
    source: Source, capacity: int = 1024, policy: str = "block", *, size: int = 65536
) -> BoundedStream:
    """Stream the lines of ``source`` as ``bytes`` (newline included; the last line may
    lack it), read by a native thread.

    ``source`` is a path (opened here: a missing one raises ``FileNotFoundError`` at
    once), a file descriptor, or a file object (a file, a pipe, a socket, a subprocess's
    stdout); fds and file objects are duplicated, so the caller still closes its own.
    The reader reads ``size`` bytes at a time; lines of any length arrive whole.

    Returns the ``BoundedStream`` the reader fills: iterate it, or use get/get_many.
    It ends (StopIteration, Closed) at end of input; a read error arrives as ``OSError``
    at its place in the stream. ``close()``, leaving a ``with`` block, or dropping the
    stream stops and joins the reader at once, whatever the source is doing.
    """
    return _start(source, capacity, policy, True, size)


def read_chunks(
    source: Source, size: int = 65536, capacity: int = 1024, policy: str = "block"
) -> BoundedStream:
    """Stream the bytes of ``source`` in chunks of at most ``size`` bytes (one per read:
    a pipe or socket may give fewer), in order, read by a native thread. ``source`` and
    the returned stream behave as in :func:`read_lines`."""
    return _start(source, capacity, policy, False, size)

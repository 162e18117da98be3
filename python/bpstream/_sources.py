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


MAX_LINE_DEFAULT = 64 << 20
"""read_lines' default max_line: 64 MiB (bpstream.h: BPS_READER_MAX_LINE_DEFAULT)."""
_MAX_LINE_MAX = 1 << 48


def _check_max_line(max_line: int) -> None:
    if not isinstance(max_line, int) or isinstance(max_line, bool):
        raise TypeError(f"max_line must be an int, not {type(max_line).__name__}")
    if max_line < 1 or max_line > _MAX_LINE_MAX:
        raise ValueError(f"max_line must be between 1 and {_MAX_LINE_MAX}, got {max_line!r}")


def _start(
    source: Source, capacity: int, policy: str, lines: bool, size: int, max_line: int = 0
) -> BoundedStream:
    if not isinstance(size, int) or isinstance(size, bool) or size < 1 or size > 1 << 30:
        raise ValueError(f"size must be an int between 1 and {1 << 30}, got {size!r}")
    stream = BoundedStream(capacity, policy)  # validates capacity and policy first
    fd = _open_source(source)
    stream._start_reader(fd, lines, size, max_line)  # owns fd from here on, even if it raises
    return stream


def read_lines(
    source: Source,
    capacity: int = 1024,
    policy: str = "block",
    *,
    size: int = 65536,
    max_line: int = MAX_LINE_DEFAULT,
) -> BoundedStream:
    """Stream the lines of ``source`` as ``bytes`` (newline included; the last line may
    lack it), read by a native thread.

    ``source`` is a path (opened here: a missing one raises ``FileNotFoundError`` at
    once), a file descriptor, or a file object (a file, a pipe, a socket, a subprocess's
    stdout); fds and file objects are duplicated, so the caller still closes its own.
    The reader reads ``size`` bytes at a time; lines of any length up to ``max_line``
    arrive whole.

    ``max_line`` (default 64 MiB) is the longest line accepted, newline included. A longer
    one ends the stream: every line before it arrives, then ``OSError`` with errno
    ``EMSGSIZE`` and a message naming ``max_line``. So a source that never sends a newline
    (``/dev/zero``, a binary file) costs at most ``max_line`` bytes beside what the stream
    holds. Running out of memory ends the stream the same way, with ``MemoryError``, never
    the process.

    Returns the ``BoundedStream`` the reader fills: iterate it, or use get/get_many.
    It ends (StopIteration, Closed) at end of input; a read error arrives as ``OSError``
    at its place in the stream. ``close()``, leaving a ``with`` block, or dropping the
    stream stops and joins the reader at once, whatever the source is doing, even when
    others read the same pipe or socket (each line then goes to whoever reads it first).
    Your fd's flags are never changed. A pipe or FIFO is read through the reader's own
    open file description of it (so ``O_NONBLOCK`` there is the reader's alone): the pipe
    keeps a reader, and writers get ``EPIPE``, until the stream is closed or ends. In a
    process forked while the reader runs, ``close()`` does not wait for the reader (it does
    not exist there): what was read before the fork stays readable, then the stream ends.
    """
    _check_max_line(max_line)
    return _start(source, capacity, policy, True, size, max_line)


def read_chunks(
    source: Source, size: int = 65536, capacity: int = 1024, policy: str = "block"
) -> BoundedStream:
    """Stream the bytes of ``source`` in chunks of at most ``size`` bytes (one per read:
    a pipe or socket may give fewer), in order, read by a native thread. ``source`` and
    the returned stream behave as in :func:`read_lines`."""
    return _start(source, capacity, policy, False, size)

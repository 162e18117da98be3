"""Sync code reading an async token stream: DSPy's apply_sync_streaming, bounded.

DSPy turns an async stream (dspy.streamify's output) into a sync generator by running it
with asyncio.run in a daemon thread that puts every item into an unbounded queue.Queue.
A slow reader lets that queue grow without limit, and a reader that stops early leaves the
thread running (and the LLM call billing) until the stream ends by itself.

bpstream.from_aiter is the same shape, bounded: the async generator runs on an event loop
in one background thread and awaits room in a BoundedStream; a slow sync consumer holds it
back (the generator is suspended, not buffering); leaving the `with` block cancels it (its
finally runs) and joins the thread.

    python examples/sync_over_async.py
"""
import asyncio
import queue
import threading
import time

import bpstream

WORDS = ("Backpressure keeps a fast producer from burying a slow consumer: the producer "
         "waits, so memory stays bounded and nothing is lost. ").split()


class Upstream:
    """What the fake LLM did: tokens generated, whether its connection was released."""

    def __init__(self):
        self.generated = 0
        self.released = threading.Event()


async def llm_tokens(upstream: Upstream, count: int = 10_000):
    """An LLM client's token stream (or dspy.streamify's output): ~2,000 tokens a second."""
    try:
        for i in range(count):
            await asyncio.sleep(0.0005)  # the network
            upstream.generated += 1
            yield WORDS[i % len(WORDS)] + " "
    finally:
        upstream.released.set()  # e.g. the HTTP response is closed, the request ends


def read_slowly(tokens, upstream, stop_after=40, every=0.01):
    """A sync consumer that renders a token every 10 ms and stops after `stop_after`."""
    for i, token in enumerate(tokens, 1):
        print(token, end="", flush=True)
        time.sleep(every)
        if i == stop_after:
            break
    print()


def classic_apply_sync_streaming(async_generator):
    """DSPy's apply_sync_streaming, reduced to its shape: unbounded queue, daemon thread."""
    items: queue.Queue = queue.Queue()
    done = object()

    def producer():
        async def runner():
            try:
                async for item in async_generator:
                    items.put(item)
            finally:
                items.put(done)

        asyncio.run(runner())

    thread = threading.Thread(target=producer, daemon=True)
    thread.start()

    def consume():
        while (item := items.get()) is not done:
            yield item

    return consume(), items, thread


def main():
    threads_before = threading.active_count()

    print("bpstream.from_aiter, capacity 16:")
    upstream = Upstream()
    with bpstream.from_aiter(llm_tokens(upstream), capacity=16) as tokens:
        read_slowly(tokens, upstream)
        stats = tokens.stats()
        print(f"  consumer stopped after 40 tokens; the generator produced {upstream.generated}"
              f" (at most 40 + 16 + 1); depth {stats.depth}, producer waited"
              f" {stats.producer_waits} times ({stats.producer_wait_seconds:.2f} s)")
    print(f"  after the with block: generator finally ran: {upstream.released.is_set()};"
          f" threads left: {threading.active_count() - threads_before}")
    bounded_ok = (upstream.released.is_set() and upstream.generated <= 40 + 16 + 1
                  and threading.active_count() == threads_before)

    print("classic unbounded queue.Queue + daemon thread, same consumer:")
    upstream = Upstream()
    tokens, backlog, thread = classic_apply_sync_streaming(llm_tokens(upstream))
    read_slowly(tokens, upstream)
    tokens.close()
    time.sleep(0.2)
    print(f"  consumer stopped after 40 tokens; the generator produced {upstream.generated}"
          f" and keeps going: queue holds {backlog.qsize()} tokens, thread alive:"
          f" {thread.is_alive()}, generator finally ran: {upstream.released.is_set()}")
    print("bounded version held back and cleaned up:", bounded_ok)
    return 0 if bounded_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

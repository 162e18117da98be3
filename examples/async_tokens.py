"""Token streaming into asyncio: a native thread emits tokens, an `async for` renders them
and stops early; the native producer is told (its next put returns BPS_CLOSED) and exits.

    python examples/async_tokens.py        # builds examples/native_producer first if needed

The producer is examples/native_producer/tokens.c, a C extension feeding the stream from
its own pthread through bpstream's C API, without the GIL. The consumer is a task: while it
waits for the next token the event loop is free (a heartbeat task keeps ticking), and the
producer's put wakes it through the loop's eventfd, with no Python thread in between.
"""
import asyncio
import os
import sys
import time

import bpstream

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "native_producer"))
try:
    import tokens
except ImportError:  # not built yet: build it next to its source, then import it
    import build

    build.build()
    import tokens

STOP_AFTER = 12  # the consumer has seen enough after this many tokens


async def main() -> int:
    stream = bpstream.BoundedStream(16)  # a slow reader holds the producer back (block)
    producer = tokens.start(stream, count=10_000, rate=200, prefix="tok")
    beats = 0

    async def heartbeat():  # other work on the same loop, never blocked by the consumer
        nonlocal beats
        while True:
            beats += 1
            await asyncio.sleep(0.001)

    beat_task = asyncio.create_task(heartbeat())
    print("streaming: ", end="", flush=True)
    started = time.monotonic()
    async with stream:  # closes the stream on exit: cancellation reaches the native thread
        i = 0
        async for token in stream:
            print(token.decode(), end="", flush=True)
            i += 1
            if i == STOP_AFTER:
                break  # an early stop: say, the user pressed "stop generating"
    print()
    waited = time.monotonic()
    while not producer.done and time.monotonic() - waited < 2.0:
        await asyncio.sleep(0.001)  # the native thread notices at its next put
    beat_task.cancel()
    exited = producer.join(timeout=2.0)
    print(f"stopped after {STOP_AFTER} tokens in {time.monotonic() - started:.2f} s;"
          f" producer exited: {exited} (last put: {producer.last_status!r});"
          f" it produced {producer.produced} tokens, not 10,000;"
          f" the loop ran {beats} heartbeats meanwhile")
    print(stream.stats())
    return 0 if exited else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

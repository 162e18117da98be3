"""Token streaming, the way an LLM binding streams results: a native thread emits tokens at
a steady rate; Python prints them as they come and stops early; the producer is told (its
next put returns BPS_CLOSED) and exits.

    python examples/token_streaming.py        # builds examples/native_producer first if needed

The producer is examples/native_producer/tokens.c: a C extension that feeds the stream
from its own pthread through bpstream's C API, without the GIL.
"""
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

stream = bpstream.BoundedStream(16)  # a slow reader holds the producer back (block)
producer = tokens.start(stream, count=10_000, rate=200, prefix="tok")
print("streaming: ", end="", flush=True)
started = time.monotonic()
for i, token in enumerate(stream):
    print(token.decode(), end="", flush=True)
    if i + 1 == STOP_AFTER:
        break  # an early stop: say, the user pressed "stop generating"
stream.close()  # cancellation travels back to the native thread
print()
exited = producer.join(timeout=2.0)
print(f"stopped after {STOP_AFTER} tokens in {time.monotonic() - started:.2f} s;"
      f" producer exited: {exited} (last put: {producer.last_status!r});"
      f" it produced {producer.produced} tokens, not 10,000")
print(stream.stats())
sys.exit(0 if exited else 1)

"""A pipeline with backpressure across processes: a child process writes lines as fast as
it can; a native reader thread (bpstream.read_lines) reads its stdout into a bounded
stream; Python processes the lines slowly. The stream holds at most 64 lines and the pipe
a few KiB, so the child is held back instead of memory growing without bound.

    python examples/subprocess_pipeline.py
"""
import subprocess
import sys
import time

import bpstream

CHILD = r"""
import sys, time
start = time.monotonic()
for i in range(20_000):
    sys.stdout.write(f"record {i} {'x' * 60}\n")
sys.stdout.flush()
sys.stderr.write(f"child: wrote 20,000 lines in {time.monotonic() - start:.2f} s\n")
"""

child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE)
start = time.monotonic()
with bpstream.read_lines(child.stdout, capacity=64) as lines:
    count = 0
    for line in lines:
        count += 1
        if count <= 2000:
            time.sleep(0.0002)  # a slow stage: the child has to wait for us
    stats = lines.stats()
child.wait()
child.stdout.close()
print(f"parent: processed {count:,} lines in {time.monotonic() - start:.2f} s;"
      f" peak depth {stats.peak_depth} of 64; the reader waited {stats.producer_waits} times"
      f" ({stats.producer_wait_seconds:.2f} s) for the slow stage")
sys.exit(0 if count == 20_000 and child.returncode == 0 else 1)

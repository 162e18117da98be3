"""block: lossless backpressure for a pipeline where every item must arrive.

Use policy="block" (the default) when losing an item is not an option: jobs,
database writes, file chunks, payments. When the consumer falls behind, put()
waits for room, so a fast producer is slowed to the consumer's pace and memory
stays bounded by the capacity instead of growing without limit.

Here a reader parses 500 rows far faster than a writer can insert them into a
(simulated) database. The stream holds at most 16 rows: the reader spends most
of its time waiting, and every row arrives, in order.
"""

import threading
import time

import bpstream

ROWS = 500


def reader(stream: bpstream.BoundedStream) -> None:
    for i in range(ROWS):
        row = {"id": i, "name": f"user{i}", "score": i * 37 % 100}
        stream.put(row)  # waits while the writer is 16 rows behind
    stream.close()  # no more rows: the writer drains what is left, then stops


def writer(stream: bpstream.BoundedStream, table: list) -> None:
    for row in stream:  # ends once the stream is closed and drained
        time.sleep(0.001)  # one INSERT
        table.append(row)


def main() -> None:
    stream = bpstream.BoundedStream(16, policy="block")
    table: list = []
    started = time.perf_counter()
    w = threading.Thread(target=writer, args=(stream, table))
    w.start()
    reader(stream)
    w.join()
    elapsed = time.perf_counter() - started

    s = stream.stats()
    in_order = [row["id"] for row in table] == list(range(ROWS))
    print(f"wrote {len(table)}/{ROWS} rows in {elapsed:.2f} s, in order: {in_order}")
    print(f"reader waited for room {s.producer_waits} times, "
          f"{s.producer_wait_seconds:.2f} s in total (that is the backpressure)")
    print(f"peak depth {s.peak_depth} of {s.capacity}: memory stayed bounded")
    print(f"stats: produced={s.produced} consumed={s.consumed} dropped={s.dropped} "
          f"rejected={s.rejected} backpressure_events={s.backpressure_events}")


if __name__ == "__main__":
    main()

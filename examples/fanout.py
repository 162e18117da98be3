"""FanOut: one producer, N worker threads, a bounded queue between them, and a shutdown
that says what happened to every item.

Here 300 "image thumbnails" are made by 8 worker threads (each job is simulated I/O of
2-6 ms; every 50th image is corrupt and raises). At most 32 jobs wait: the producer is
held back instead of queueing all 300 at once. Leaving the `with` block drains the
backlog and joins the workers; the report accounts for every job.

Then a batch with one job that hangs: shutdown(deadline=0.3) stops waiting after 0.3 s,
discards what is still queued, and reports the stuck thread as abandoned (Python cannot
kill a thread; it is a daemon and ends when its job returns).
"""

import random
import threading
import time

import bpstream

rng = random.Random(7)


def make_thumbnail(image_id: int) -> None:
    time.sleep(rng.uniform(0.002, 0.006))  # read, resize, write
    if image_id % 50 == 49:
        raise ValueError(f"image {image_id} is corrupt")


def main() -> None:
    with bpstream.FanOut(make_thumbnail, workers=8, capacity=32, name="thumbnails") as fan:
        fan.feed(range(300))  # waits whenever 32 jobs are queued
    report = fan.report
    print(report)
    print(f"made {report.processed} thumbnails, {report.failed} failed:",
          ", ".join(str(e) for e in report.errors))

    unstick = threading.Event()

    def render(job: int) -> None:
        if job == 0:
            unstick.wait(30)  # a job that hangs (a dead network share, say)
        else:
            time.sleep(0.01)

    fan = bpstream.FanOut(render, workers=4, capacity=500, name="render")
    fan.feed(range(200))
    report = fan.shutdown(deadline=0.3)  # stop waiting after 0.3 s, whatever is left
    print()
    print(report)
    print(f"deadline hit: {report.deadline_hit}; {report.discarded} queued jobs discarded; "
          f"{report.aborted} thread abandoned, holding {report.abandoned} job")
    unstick.set()  # in real code the job would return on its own; here we let it go


if __name__ == "__main__":
    main()

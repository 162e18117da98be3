"""bpstream.Queue as a drop-in: use it wherever queue.Queue is used today.

Same constructor, calls and exceptions (bpstream.Full is a queue.Full, Empty a
queue.Empty): existing code keeps working after changing one import.
task_done()/join() wait for the work; shutdown() stops the workers with Python
3.13's semantics on every Python bpstream supports; stats() tells what happened.
"""

import collections
import queue
import threading
import time

from bpstream import Queue, ShutDown  # was: from queue import Queue, ShutDown


def worker(q: Queue, done: list) -> None:
    while True:
        try:
            item = q.get()
        except ShutDown:  # shut down and drained
            return
        time.sleep(0.001)  # do the work
        done.append((threading.current_thread().name, item))
        q.task_done()


def main() -> None:
    q = Queue(maxsize=10)
    done: list = []
    threads = [threading.Thread(target=worker, args=(q, done), name=f"worker-{i}")
               for i in range(3)]
    for t in threads:
        t.start()
    for item in range(100):
        q.put(item)  # blocks while 10 items wait
    q.join()  # returns when every item has been task_done()
    per_worker = collections.Counter(name for name, _ in done)
    print(f"all {len(done)} tasks done {dict(sorted(per_worker.items()))}; "
          f"qsize={q.qsize()} empty={q.empty()} full={q.full()}")

    try:
        q.get_nowait()
    except queue.Empty:  # the familiar exception still catches it
        print("get_nowait() on an empty queue raised queue.Empty")
    q.shutdown()  # wakes the workers: their get() raises ShutDown
    for t in threads:
        t.join()
    try:
        q.put("late")
    except ShutDown:
        print(f"put() after shutdown() raised ShutDown; is_shutdown={q.is_shutdown}")

    s = q.stats()
    print(f"stats: produced={s.produced} consumed={s.consumed} dropped={s.dropped} "
          f"unfinished_tasks={s.unfinished_tasks} producer_waits={s.producer_waits}")


if __name__ == "__main__":
    main()

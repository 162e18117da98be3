// Readiness watches: the one-shot, re-armed notification an async waiter uses instead of
// parking a thread (StreamWatch's protocol).
import Foundation
import XCTest
import Synchronization
@testable import BPStreamCore

/// Records every notification; its notify also calls back into the stream (stats), which
/// would deadlock if the stream notified under its lock.
private final class Recorder: @unchecked Sendable {
    let events = Locked([Readiness]())
    func notify<T>(_ stream: BoundedStream<T>) -> @Sendable (Readiness) -> Void {
        { [events] readiness in
            _ = stream.stats()
            events.withLock { $0.append(readiness) }
        }
    }
    var all: [Readiness] { events.current }
}

final class ReadinessTests: XCTestCase {
    func testArmOnAnEmptyStreamThenOnePutNotifiesOnce() throws {
        let stream = try BoundedStream<Int>(capacity: 4)
        let recorder = Recorder()
        let watch = stream.watch(recorder.notify(stream))
        XCTAssertEqual(stream.arm(watch, for: .readable), [])
        try stream.put(1)
        try stream.put(2)  // disarmed by the first: one notification per arm
        XCTAssertEqual(recorder.all, [.readable])
        // Ready now: arm reports it and arms nothing.
        XCTAssertEqual(stream.arm(watch, for: .readable), .readable)
        _ = try stream.get(); _ = try stream.get()
        XCTAssertEqual(recorder.all, [.readable])
    }

    func testWritableFiresWhenAGetFreesRoom() throws {
        let stream = try BoundedStream<Int>(capacity: 1)
        let recorder = Recorder()
        let watch = stream.watch(recorder.notify(stream))
        XCTAssertEqual(stream.arm(watch, for: .writable), .writable)
        try stream.put(1)
        XCTAssertEqual(stream.arm(watch, for: .writable), [])
        XCTAssertEqual(try stream.get(), 1)
        XCTAssertEqual(recorder.all, [.writable])
    }

    func testGetManyAndSettleAndCapacityFreeRoom() throws {
        let stream = try BoundedStream<Int>(capacity: 2)
        let recorder = Recorder()
        let watch = stream.watch(recorder.notify(stream))
        try stream.put(1); try stream.put(2)
        XCTAssertEqual(stream.arm(watch, for: .writable), [])
        XCTAssertEqual(try stream.get(maxCount: 2), [1, 2])
        try stream.put(3); try stream.put(4)
        XCTAssertEqual(stream.arm(watch, for: .writable), [])
        try stream.setCapacity(3)
        XCTAssertEqual(recorder.all, [.writable, .writable])
    }

    func testDeliveriesMarkedWithoutTheLockReachAWatchWaitingForRoom() throws {
        let stream = try BoundedStream<Int>(capacity: 2)
        let recorder = Recorder()
        let watch = stream.watch(recorder.notify(stream))
        try stream.put(1); try stream.put(2)
        var observer = NoWaitObserver()
        var reserved = [0, 0]
        let taken = reserved.withUnsafeMutableBufferPointer {
            try? stream.get(into: $0, reserving: true, timeoutNanoseconds: 0, observer: &observer).get()
        }
        XCTAssertEqual(taken, 2)
        XCTAssertEqual(stream.arm(watch, for: .writable), [])
        stream.markDelivered(1)  // a consumer delivered one reserved item: room for a put
        XCTAssertEqual(recorder.all, [.writable])
        stream.settle(delivered: 1)
    }

    func testSettleHandingItemsBackMakesTheStreamReadable() throws {
        let stream = try BoundedStream<Int>(capacity: 4)
        let recorder = Recorder()
        let watch = stream.watch(recorder.notify(stream))
        try stream.put(1)
        var observer = NoWaitObserver()
        var reserved = [0]
        _ = reserved.withUnsafeMutableBufferPointer {
            try? stream.get(into: $0, reserving: true, timeoutNanoseconds: 0, observer: &observer).get()
        }
        XCTAssertEqual(stream.arm(watch, for: .readable), [])
        stream.settle(delivered: 0, returning: reserved)
        XCTAssertEqual(recorder.all, [.readable])
        XCTAssertEqual(try stream.get(), 1)
    }

    func testCloseNotifiesEveryArmedWatchWithWhatItWaitsForAndClosed() throws {
        let stream = try BoundedStream<Int>(capacity: 1)
        let readers = Recorder(), writers = Recorder(), idle = Recorder()
        let r = stream.watch(readers.notify(stream))
        let w = stream.watch(writers.notify(stream))
        _ = stream.watch(idle.notify(stream))
        try stream.put(1)
        _ = try stream.get()
        XCTAssertEqual(stream.arm(r, for: .readable), [])
        try stream.put(2)
        XCTAssertEqual(stream.arm(w, for: .writable), [])
        _ = stream.arm(r, for: .readable)  // ready (an item): not armed
        stream.close()
        XCTAssertEqual(writers.all, [[.writable, .closed]])
        XCTAssertEqual(readers.all, [.readable])
        XCTAssertEqual(idle.all, [])
        XCTAssertEqual(stream.arm(r, for: .readable), [.readable, .closed])
    }

    /// `.tasksDone` (an async join): ready with no unfinished tasks; armed, it fires on the
    /// task_done that reaches zero, not on one before it.
    func testTasksDoneFiresWhenUnfinishedTasksReachZero() throws {
        let stream = try BoundedStream<Int>(capacity: 4)
        let recorder = Recorder()
        let watch = stream.watch(recorder.notify(stream))
        XCTAssertEqual(stream.arm(watch, for: .tasksDone), .tasksDone)
        try stream.put(1); try stream.put(2)
        XCTAssertEqual(stream.arm(watch, for: .tasksDone), [])
        _ = try stream.get(); _ = try stream.get()
        try stream.taskDone()
        XCTAssertEqual(recorder.all, [])
        try stream.taskDone()
        XCTAssertEqual(recorder.all, [.tasksDone])
    }

    /// A close finishes no task: it wakes item and room waiters, not joiners; an immediate
    /// close discards the backlog, which finishes those tasks, and that fires.
    func testCloseFiresTasksDoneOnlyThroughItsDiscards() throws {
        let stream = try BoundedStream<Int>(capacity: 4)
        let joiner = Recorder(), both = Recorder()
        let j = stream.watch(joiner.notify(stream))
        let b = stream.watch(both.notify(stream))
        try stream.put(1)
        XCTAssertEqual(stream.arm(j, for: .tasksDone), [])
        XCTAssertEqual(stream.arm(b, for: [.writable, .tasksDone]), .writable)
        _ = try stream.get()
        try stream.put(2); try stream.put(3); try stream.put(4); try stream.put(5)
        XCTAssertEqual(stream.arm(b, for: [.writable, .tasksDone]), [])
        stream.close()
        XCTAssertEqual(joiner.all, [])
        XCTAssertEqual(both.all, [[.writable, .closed]])
        // Closed, tasks unfinished: tasksDone does not hold, so arm arms it.
        XCTAssertEqual(stream.arm(b, for: .tasksDone), [])
        try stream.taskDone()  // the item got before the close: 4 left, in the buffer
        stream.close(immediate: true)  // discards them: done
        XCTAssertEqual(joiner.all, [.tasksDone])
        XCTAssertEqual(both.all, [[.writable, .closed], .tasksDone])
        XCTAssertEqual(stream.arm(j, for: .tasksDone), .tasksDone)
    }

    func testUnwatchedWatchesAreNeverNotified() throws {
        let stream = try BoundedStream<Int>(capacity: 1)
        let recorder = Recorder()
        let watch = stream.watch(recorder.notify(stream))
        XCTAssertEqual(stream.arm(watch, for: .readable), [])
        stream.unwatch(watch)
        try stream.put(1)
        stream.close()
        XCTAssertEqual(recorder.all, [])
        XCTAssertEqual(stream.arm(watch, for: .readable), [.readable, .closed])
    }

    /// A batch put that stored some items and must wait for room notifies an armed reader
    /// before it parks: otherwise an async consumer would never come for those items, and
    /// the producer would wait for room forever.
    func testABatchPutNotifiesBeforeItParks() throws {
        let stream = try BoundedStream<Int>(capacity: 2)
        let notified = Locked(false)
        let watch = stream.watch { _ in notified.withLock { $0 = true } }
        XCTAssertEqual(stream.arm(watch, for: .readable), [])
        let producer = TestThread {
            var observer = NoWaitObserver()
            _ = stream.put(contentsOf: [1, 2, 3, 4], timeoutNanoseconds: 10_000_000_000, observer: &observer)
        }
        XCTAssertTrue(eventually { notified.current }, "the reader was not told while the producer waited")
        var got: [Int] = []
        while got.count < 4 { got += try stream.get(maxCount: 4, timeout: .seconds(5)) }
        XCTAssertEqual(got, [1, 2, 3, 4])
        XCTAssertTrue(producer.join())
    }

    /// Many threads put and get while a watcher re-arms after every notification: each
    /// notification comes from a transition that made its readiness true (checked by
    /// retrying), and the watcher always gets one while it is armed and the stream moves.
    func testRearmingUnderConcurrencyNeverStrandsTheWatcher() throws {
        let stream = try BoundedStream<Int>(capacity: 8)
        let consumed = Atomic<Int>(0)
        let total = 20_000
        let wakeups = Atomic<Int>(0)
        let semaphore = DispatchSemaphore(value: 0)
        let watch = stream.watch { _ in wakeups.add(1, ordering: .relaxed); semaphore.signal() }
        let producer = TestThread {
            for i in 0..<total { try? stream.put(i) }
        }
        var got = 0
        while got < total {
            if (try? stream.get(timeout: .zero)) != nil { got += 1; continue }
            if stream.arm(watch, for: .readable).isEmpty {
                XCTAssertEqual(semaphore.wait(timeout: .now() + 10), .success, "stranded at \(got)")
            }
        }
        consumed.store(got, ordering: .relaxed)
        XCTAssertTrue(producer.join())
        XCTAssertEqual(consumed.load(ordering: .relaxed), total)
        XCTAssertGreaterThan(wakeups.load(ordering: .relaxed), 0)
    }
}

// BoundedStream through its public APIs: the throwing Swift API and the non-throwing one
// the C ABI calls. Policies end to end, onDrop accounting (with reference-type items whose
// deinits prove nothing leaks or is released twice), timeouts, real blocking (a trigger
// thread proves a call waited), close/join/taskDone, and the wait-observer contract.
import Foundation
import XCTest
@testable import BPStreamCore

/// Runs `body` and checks it throws exactly `expected`.
private func assertThrows<T>(
    _ expected: StreamError, _ message: @autoclosure () -> String = "",
    file: StaticString = #filePath, line: UInt = #line, _ body: () throws(StreamError) -> T
) {
    do {
        let value = try body()
        XCTFail("expected \(expected), got \(value) \(message())", file: file, line: line)
    } catch {
        XCTAssertEqual(error, expected, message(), file: file, line: line)
    }
}

/// The items buffered now, oldest first.
private func buffered<T>(_ stream: BoundedStream<T>) -> [T] {
    var items: [T] = []
    stream.forEachBuffered { items.append($0); return true }
    return items
}

/// A slot a hook or closure can fill with the stream it belongs to (onDrop is set before
/// the stream exists). Weak, so it never keeps the stream alive.
private final class StreamRef<T>: @unchecked Sendable {
    weak var stream: BoundedStream<T>?
}

final class BoundedStreamTests: XCTestCase {

    // MARK: creation and configuration

    func testInitRejectsCapacityOutOfRange() throws {
        for bad in [0, -1, -2, StreamLimits.maximumCapacity + 1, Int.min] {
            do {
                _ = try BoundedStream<Int>(capacity: bad)
                XCTFail("capacity \(bad) accepted")
            } catch {
                guard case .invalidArgument = error else { return XCTFail("\(bad): \(error)") }
            }
        }
        XCTAssertEqual(try BoundedStream<Int>(capacity: StreamLimits.maximumCapacity).capacity,
                       StreamLimits.maximumCapacity)
        XCTAssertEqual(try BoundedStream<Int>(capacity: 1).capacity, 1)
        XCTAssertNil(try BoundedStream<Int>(capacity: nil).capacity)
        for policy in OverflowPolicy.allCases {
            XCTAssertEqual(try BoundedStream<Int>(capacity: 2, policy: policy).policy, policy)
        }
        XCTAssertEqual(try BoundedStream<Int>(capacity: 2).policy, .block, "block by default")
    }

    func testSetCapacityValidatesAndReports() throws {
        let stream = try BoundedStream<Int>(capacity: 4, policy: .reject)
        for bad in [0, -1, StreamLimits.maximumCapacity + 1] {
            assertThrows(.invalidArgument(
                "capacity must be between 1 and \(StreamLimits.maximumCapacity), got \(bad)")) {
                () throws(StreamError) in try stream.setCapacity(bad)
            }
            XCTAssertEqual(stream.capacity, 4, "a bad value changes nothing")
        }
        for i in 0..<4 { try stream.put(i) }
        try stream.setCapacity(2)
        XCTAssertEqual(stream.capacity, 2)
        XCTAssertEqual(buffered(stream), [0, 1, 2, 3], "shrinking keeps every item")
        assertThrows(.full) { () throws(StreamError) in try stream.put(9) }
        try stream.setCapacity(nil)
        XCTAssertNil(stream.capacity)
        XCTAssertNil(stream.stats().capacity)
        for i in 4..<100 { try stream.put(i) }
        XCTAssertEqual(stream.count, 100)
    }

    // MARK: put and get

    func testPutGetRoundTripIsFIFO() throws {
        let stream = try BoundedStream<Int>(capacity: 8)
        for i in 0..<8 { XCTAssertTrue(try stream.put(i)) }
        XCTAssertEqual(stream.count, 8)
        XCTAssertEqual((0..<8).compactMap { _ in try? stream.get() }, Array(0..<8))
        XCTAssertEqual(stream.count, 0)
        let stats = stream.stats()
        XCTAssertEqual(stats.produced, 8)
        XCTAssertEqual(stats.consumed, 8)
        XCTAssertEqual(stats.peakDepth, 8)
        XCTAssertEqual(stats.capacity, 8)
        XCTAssertEqual(stats.producerWaits + stats.consumerWaits, 0)
        XCTAssertIdentity(stats)
    }

    func testForEachBufferedVisitsOldestFirstAndStops() throws {
        let stream = try BoundedStream<Int>(capacity: nil)
        for i in 0..<10 { try stream.put(i) }
        var seen: [Int] = []
        stream.forEachBuffered { seen.append($0); return $0 < 3 }
        XCTAssertEqual(seen, [0, 1, 2, 3])
        XCTAssertEqual(stream.count, 10, "visiting takes nothing")
    }

    // MARK: policies end to end

    func testRejectThrowsFullAndTheCallerKeepsTheItem() throws {
        let tracker = DeinitTracker()
        let drops = DropLog<TrackedItem> { $0.id }
        let stream = try BoundedStream<TrackedItem>(capacity: 2, policy: .reject, onDrop: drops.onDrop)
        try stream.put(TrackedItem(0, tracker))
        try stream.put(TrackedItem(1, tracker))
        let mine = TrackedItem(2, tracker)
        assertThrows(.full) { () throws(StreamError) in try stream.put(mine) }
        XCTAssertEqual(buffered(stream).map(\.id), [0, 1])
        XCTAssertEqual(drops.count, 0)
        XCTAssertFalse(tracker.destroyedIDs.contains(2))
        XCTAssertEqual(mine.id, 2, "still ours")
        let stats = stream.stats()
        XCTAssertEqual(stats.rejected, 1)
        XCTAssertEqual(stats.produced, 2)
        XCTAssertEqual(stats.dropped, 0)
    }

    func testDropNewestShedsWithoutOnDropAndKeepsBacklogOrder() throws {
        let tracker = DeinitTracker()
        let drops = DropLog<TrackedItem> { $0.id }
        let stream = try BoundedStream<TrackedItem>(capacity: 2, policy: .dropNewest, onDrop: drops.onDrop)
        var kept: [TrackedItem] = []
        for i in 0..<5 {
            let item = TrackedItem(i, tracker)
            if try !stream.put(item) { kept.append(item) }
        }
        XCTAssertEqual(kept.map(\.id), [2, 3, 4], "put returns false for a shed item")
        XCTAssertEqual(drops.count, 0, "shed items stay with the putter; onDrop never sees them")
        XCTAssertEqual(buffered(stream).map(\.id), [0, 1])
        let stats = stream.stats()
        XCTAssertEqual(stats.produced, 5)
        XCTAssertEqual(stats.droppedShed, 3)
        XCTAssertEqual(stats.backpressureEvents, 3)
        XCTAssertIdentity(stats)
        kept.removeAll()
        XCTAssertEqual(Set(tracker.destroyedIDs), [2, 3, 4], "the putter let go of them")
    }

    func testDropOldestHandsEachEvictedItemToOnDropOnce() throws {
        let tracker = DeinitTracker()
        let drops = DropLog<TrackedItem> { $0.id }
        let stream = try BoundedStream<TrackedItem>(capacity: 2, policy: .dropOldest, onDrop: drops.onDrop)
        for i in 0..<5 { XCTAssertTrue(try stream.put(TrackedItem(i, tracker))) }
        XCTAssertEqual(drops.ids(.evicted), [0, 1, 2], "oldest first, before put returned")
        XCTAssertEqual(drops.count, 3)
        XCTAssertEqual(Set(tracker.destroyedIDs), [0, 1, 2], "evicted items are released, not kept")
        XCTAssertEqual(buffered(stream).map(\.id), [3, 4])
        let stats = stream.stats()
        XCTAssertEqual(stats.droppedEvicted, 3)
        XCTAssertEqual(stats.unfinishedTasks, 2)
        XCTAssertIdentity(stats)
    }

    func testDropAllHandsEachClearedItemToOnDropOnce() throws {
        let tracker = DeinitTracker()
        let drops = DropLog<TrackedItem> { $0.id }
        let stream = try BoundedStream<TrackedItem>(capacity: 3, policy: .dropAll, onDrop: drops.onDrop)
        for i in 0..<7 { try stream.put(TrackedItem(i, tracker)) }
        XCTAssertEqual(drops.ids(.cleared), [0, 1, 2, 3, 4, 5])
        XCTAssertEqual(drops.count, 6)
        XCTAssertEqual(buffered(stream).map(\.id), [6])
        let stats = stream.stats()
        XCTAssertEqual(stats.droppedCleared, 6)
        XCTAssertEqual(stats.backpressureEvents, 2)
        XCTAssertIdentity(stats)
        XCTAssertEqual(Set(tracker.destroyedIDs), Set(0..<6))
    }

    func testImmediateCloseDiscardsTheBacklogThroughOnDropOnThisThread() throws {
        let tracker = DeinitTracker()
        let threads = Locked([pthread_t]())
        let drops = DropLog<TrackedItem> { $0.id }
        let log = drops.onDrop
        let stream = try BoundedStream<TrackedItem>(capacity: 8, onDrop: { item, reason in
            threads.withLock { $0.append(pthread_self()) }
            log(item, reason)
        })
        for i in 0..<4 { try stream.put(TrackedItem(i, tracker)) }
        XCTAssertEqual(try stream.get().id, 0)
        stream.close(immediate: true)
        XCTAssertEqual(drops.ids(.discardedOnClose), [1, 2, 3])
        XCTAssertEqual(drops.count, 3)
        XCTAssertTrue(threads.current.allSatisfy { pthread_equal($0, pthread_self()) != 0 })
        XCTAssertEqual(stream.count, 0)
        XCTAssertTrue(stream.isClosed)
        assertThrows(.closed) { () throws(StreamError) in try stream.get(timeout: .seconds(5)) }
        assertThrows(.closed) { () throws(StreamError) in try stream.put(TrackedItem(9, tracker)) }
        let stats = stream.stats()
        XCTAssertEqual(stats.droppedOnClose, 3)
        XCTAssertTrue(stats.isClosed)
        XCTAssertIdentity(stats)
        stream.close(immediate: true)
        XCTAssertEqual(drops.count, 3, "closing again discards nothing more")
    }

    func testItemsLeftAtDeinitGoToOnDropOnce() throws {
        let tracker = DeinitTracker()
        let drops = DropLog<TrackedItem> { $0.id }
        weak var weakStream: BoundedStream<TrackedItem>?
        do {
            let stream = try BoundedStream<TrackedItem>(capacity: 8, onDrop: drops.onDrop)
            weakStream = stream
            for i in 0..<3 { try stream.put(TrackedItem(i, tracker)) }
            XCTAssertEqual(drops.count, 0)
        }
        XCTAssertNil(weakStream, "the stream is gone")
        XCTAssertEqual(drops.ids(.leftAtDeinit), [0, 1, 2])
        XCTAssertEqual(drops.count, 3)
        XCTAssertEqual(tracker.live, 0)
    }

    func testWithoutOnDropDroppedItemsAreStillReleased() throws {
        let tracker = DeinitTracker()
        do {
            let oldest = try BoundedStream<TrackedItem>(capacity: 1, policy: .dropOldest)
            let all = try BoundedStream<TrackedItem>(capacity: 2, policy: .dropAll)
            let closing = try BoundedStream<TrackedItem>(capacity: 4)
            for i in 0..<5 {
                try oldest.put(TrackedItem(i, tracker))
                try all.put(TrackedItem(100 + i, tracker))
            }
            try closing.put(TrackedItem(200, tracker))
            closing.close(immediate: true)
            XCTAssertEqual(tracker.live, 1 + 1, "only what is still buffered is alive")
        }
        XCTAssertEqual(tracker.live, 0, "and that goes with the streams")
    }

    /// Every item ends in exactly one place: consumed, handed to onDrop once, or kept by
    /// the putter; and once the streams are gone, nothing is alive.
    func testEveryItemIsAccountedForExactlyOnceUnderEveryPolicy() throws {
        var rng = SplitMix64(seed: 42)
        for policy in OverflowPolicy.allCases {
            let tracker = DeinitTracker()
            let drops = DropLog<TrackedItem> { $0.id }
            var consumed: [Int] = []
            var keptByPutter: [Int] = []
            do {
                let stream = try BoundedStream<TrackedItem>(capacity: 3, policy: policy, onDrop: drops.onDrop)
                var observer = NoWaitObserver()
                for i in 0..<400 {
                    if Int.random(in: 0..<3, using: &rng) == 0 {
                        if case .success(let item) = stream.get(timeoutNanoseconds: 0, observer: &observer) {
                            consumed.append(item.id)
                        }
                    }
                    let outcome = stream.put(TrackedItem(i, tracker), timeoutNanoseconds: 0, observer: &observer)
                    if outcome != .stored { keptByPutter.append(i) }
                    if i == 300 && policy.rawValue % 2 == 0 { stream.close(immediate: true) }
                }
                XCTAssertIdentity(stream.stats(), "\(policy)")
            }
            let dropped = drops.all.map(\.0)
            XCTAssertEqual(Set(dropped).count, dropped.count, "\(policy): onDrop twice for one item")
            let all = consumed + dropped + keptByPutter
            XCTAssertEqual(all.sorted(), Array(0..<400), "\(policy): every item exactly once")
            XCTAssertEqual(tracker.live, 0, "\(policy): nothing leaked")
            XCTAssertEqual(tracker.destroyedIDs.sorted(), Array(0..<400), "\(policy): each freed once")
        }
    }

    func testOnDropRunsWithoutTheStreamLock() throws {
        // An onDrop that calls into the stream would deadlock if it ran under the lock.
        for policy in [OverflowPolicy.dropOldest, .dropAll, .block] {
            let ref = StreamRef<Int>()
            let depthsSeen = Locked([Int]())
            let stream = try BoundedStream<Int>(capacity: 2, policy: policy, onDrop: { _, _ in
                if let stream = ref.stream { depthsSeen.withLock { $0.append(stream.count) } }
            })
            ref.stream = stream
            let worker = TestThread {
                var observer = NoWaitObserver()
                for i in 0..<5 { _ = stream.put(i, timeoutNanoseconds: 0, observer: &observer) }
                _ = stream.put(contentsOf: [5, 6, 7], timeoutNanoseconds: 0, observer: &observer)
                stream.close(immediate: true)
            }
            XCTAssertTrue(worker.join(timeout: 10), "\(policy): onDrop ran with the lock held (deadlock)")
            XCTAssertFalse(depthsSeen.current.isEmpty, "\(policy): onDrop was called")
        }
    }

    // MARK: timeouts

    func testGetTimesOutWithEmptyAfterTheTimeout() throws {
        let stream = try BoundedStream<Int>(capacity: 2)
        let start = monotonicSeconds()
        assertThrows(.empty) { () throws(StreamError) in try stream.get(timeout: .milliseconds(200)) }
        let elapsed = monotonicSeconds() - start
        XCTAssertGreaterThanOrEqual(elapsed, 0.19)
        XCTAssertLessThan(elapsed, 20)
        let stats = stream.stats()
        XCTAssertEqual(stats.consumerWaits, 1)
        XCTAssertGreaterThanOrEqual(stats.consumerWaitNanoseconds, 150_000_000)
        XCTAssertEqual(stats.consumed, 0)
    }

    func testBlockPutTimesOutWithFullAndStoresNothing() throws {
        let stream = try BoundedStream<Int>(capacity: 1)
        try stream.put(1)
        let start = monotonicSeconds()
        assertThrows(.full) { () throws(StreamError) in try stream.put(2, timeout: .milliseconds(200)) }
        let elapsed = monotonicSeconds() - start
        XCTAssertGreaterThanOrEqual(elapsed, 0.19)
        XCTAssertLessThan(elapsed, 20)
        XCTAssertEqual(buffered(stream), [1])
        let stats = stream.stats()
        XCTAssertEqual(stats.rejected, 1)
        XCTAssertEqual(stats.producerWaits, 1)
        XCTAssertEqual(stats.backpressureEvents, 1)
        XCTAssertGreaterThanOrEqual(stats.producerWaitNanoseconds, 150_000_000)
        XCTAssertEqual(stats.produced, 1)
        XCTAssertIdentity(stats)
    }

    func testZeroOrNegativeTimeoutNeverWaits() throws {
        let stream = try BoundedStream<Int>(capacity: 1)
        assertThrows(.empty) { () throws(StreamError) in try stream.get(timeout: .zero) }
        assertThrows(.empty) { () throws(StreamError) in try stream.get(timeout: .seconds(-5)) }
        try stream.put(1)
        assertThrows(.full) { () throws(StreamError) in try stream.put(2, timeout: .zero) }
        assertThrows(.full) { () throws(StreamError) in try stream.put(2, timeout: .seconds(-2)) }
        var observer = NoWaitObserver()
        XCTAssertEqual(stream.put(3, timeoutNanoseconds: 0, observer: &observer), .full)
        let stats = stream.stats()
        XCTAssertEqual(stats.producerWaits, 0)
        XCTAssertEqual(stats.consumerWaits, 0)
        XCTAssertEqual(stats.rejected, 3, "non-blocking puts on a full block stream count as rejected")
    }

    /// A negative `Duration` means "do not wait", whatever its size: -1 ms must not turn
    /// into the core's "wait forever" (a negative nanosecond count).
    func testSubSecondNegativeTimeoutsNeverWait() throws {
        let empty = try BoundedStream<Int>(capacity: 1)
        let full = try BoundedStream<Int>(capacity: 1)
        try full.put(0)
        let getResult = Locked<StreamError?>(nil)
        let putResult = Locked<StreamError?>(nil)
        let getter = TestThread {
            do throws(StreamError) { _ = try empty.get(timeout: .milliseconds(-1)) } catch {
                getResult.withLock { $0 = error }
            }
        }
        let putter = TestThread {
            do throws(StreamError) { try full.put(1, timeout: .nanoseconds(-1_500_000_000)) } catch {
                putResult.withLock { $0 = error }
            }
        }
        let getterReturned = getter.join(timeout: 3)
        let putterReturned = putter.join(timeout: 3)
        // Release whatever is stuck, so no thread outlives the test.
        empty.close()
        full.close()
        XCTAssertTrue(getterReturned, "get(timeout: -1 ms) waited instead of failing at once")
        XCTAssertTrue(putterReturned, "put(timeout: -1.5 s) waited instead of failing at once")
        if getterReturned { XCTAssertEqual(getResult.current, .empty) }
        if putterReturned { XCTAssertEqual(putResult.current, .full) }
        XCTAssertTrue(getter.join(timeout: 10) && putter.join(timeout: 10))
    }

    func testJoinTimesOutWhileTasksAreUnfinished() throws {
        let stream = try BoundedStream<Int>(capacity: 2)
        try stream.put(1)
        assertThrows(.timedOut) { () throws(StreamError) in try stream.join(timeout: .zero) }
        let start = monotonicSeconds()
        assertThrows(.timedOut) { () throws(StreamError) in try stream.join(timeout: .milliseconds(200)) }
        XCTAssertGreaterThanOrEqual(monotonicSeconds() - start, 0.19)
        _ = try stream.get()
        try stream.taskDone()
        try stream.join(timeout: .zero)
    }

    // MARK: blocking, woken by another thread

    func testGetBlocksUntilAnotherThreadPuts() throws {
        let stream = try BoundedStream<Int>(capacity: 2)
        let triggered = Locked(false)
        let trigger = TestThread {
            usleep(100_000)
            triggered.withLock { $0 = true }
            _ = try? stream.put(7)
        }
        XCTAssertEqual(try stream.get(timeout: .seconds(30)), 7)
        XCTAssertTrue(triggered.current, "get returned before the put: it did not block")
        XCTAssertTrue(trigger.join())
        XCTAssertEqual(stream.stats().consumerWaits, 1)
    }

    func testPutBlocksUntilAnotherThreadGets() throws {
        let stream = try BoundedStream<Int>(capacity: 1)
        try stream.put(1)
        let triggered = Locked(false)
        let got = Locked<Int?>(nil)
        let trigger = TestThread {
            usleep(100_000)
            triggered.withLock { $0 = true }
            let item = try? stream.get()
            got.withLock { $0 = item }
        }
        XCTAssertTrue(try stream.put(2, timeout: .seconds(30)))
        XCTAssertTrue(triggered.current, "put returned before the get: it did not block")
        XCTAssertTrue(trigger.join())
        XCTAssertEqual(got.current, 1)
        XCTAssertEqual(buffered(stream), [2])
        let stats = stream.stats()
        XCTAssertEqual(stats.producerWaits, 1)
        XCTAssertEqual(stats.rejected, 0)
    }

    func testBlockedPutIsWokenByGrowingTheCapacity() throws {
        let stream = try BoundedStream<Int>(capacity: 1)
        try stream.put(1)
        let triggered = Locked(false)
        let trigger = TestThread {
            usleep(100_000)
            triggered.withLock { $0 = true }
            try? stream.setCapacity(2)
        }
        XCTAssertTrue(try stream.put(2, timeout: .seconds(30)))
        XCTAssertTrue(triggered.current, "put returned before the capacity grew")
        XCTAssertTrue(trigger.join())
        XCTAssertEqual(buffered(stream), [1, 2])
    }

    func testCloseWakesBlockedProducersWithClosed() throws {
        let stream = try BoundedStream<Int>(capacity: 1)
        try stream.put(0)
        let errors = Locked([StreamError]())
        let producers = (1...3).map { i in
            TestThread {
                do throws(StreamError) { try stream.put(i, timeout: .seconds(30)) } catch { errors.withLock { $0.append(error) } }
            }
        }
        XCTAssertTrue(eventually { stream.stats().producerWaits == 3 }, "producers never blocked")
        stream.close()
        for producer in producers { XCTAssertTrue(producer.join(timeout: 10), "a producer stayed blocked") }
        XCTAssertEqual(errors.current, [.closed, .closed, .closed])
        XCTAssertEqual(try stream.get(), 0, "the backlog drains after a plain close")
        assertThrows(.closed) { () throws(StreamError) in try stream.get() }
        XCTAssertIdentity(stream.stats())
    }

    func testCloseWakesBlockedConsumersWhichDrainThenSeeClosed() throws {
        let stream = try BoundedStream<Int>(capacity: 64)
        let got = Locked([Int]())
        let endings = Locked([StreamError]())
        let consumers = (0..<3).map { _ in
            TestThread {
                while true {
                    do throws(StreamError) {
                        let item = try stream.get(timeout: .seconds(30))
                        got.withLock { $0.append(item) }
                    } catch {
                        endings.withLock { $0.append(error) }
                        return
                    }
                }
            }
        }
        XCTAssertTrue(eventually { stream.stats().consumerWaits >= 3 }, "consumers never blocked")
        for i in 0..<50 { try stream.put(i) }
        stream.close()
        for consumer in consumers { XCTAssertTrue(consumer.join(timeout: 10), "a consumer stayed blocked") }
        XCTAssertEqual(got.current.sorted(), Array(0..<50), "drained exactly once each")
        XCTAssertEqual(endings.current, [.closed, .closed, .closed])
    }

    func testImmediateCloseWakesBlockedConsumersWithClosed() throws {
        let stream = try BoundedStream<Int>(capacity: 4)
        let endings = Locked([StreamError]())
        let consumers = (0..<2).map { _ in
            TestThread {
                do throws(StreamError) { _ = try stream.get(timeout: .seconds(30)) } catch { endings.withLock { $0.append(error) } }
            }
        }
        XCTAssertTrue(eventually { stream.stats().consumerWaits == 2 })
        stream.close(immediate: true)
        for consumer in consumers { XCTAssertTrue(consumer.join(timeout: 10)) }
        XCTAssertEqual(endings.current, [.closed, .closed])
    }

    // MARK: close with a producer's failure

    func testCloseWithFailureDrainsThenThrowsTheFailure() throws {
        let stream = try BoundedStream<Int>(capacity: 4)
        try stream.put(1)
        try stream.put(2)
        let failure = ProducerFailure(code: 5, message: "Input/output error")
        stream.close(failure: failure)
        XCTAssertEqual(stream.failure, failure)
        XCTAssertTrue(stream.isClosed)
        assertThrows(.closed) { () throws(StreamError) in try stream.put(3) }
        XCTAssertEqual(try stream.get(), 1)
        XCTAssertEqual(try stream.get(maxCount: 5), [2])
        assertThrows(.failed(failure)) { () throws(StreamError) in try stream.get() }
        assertThrows(.failed(failure)) { () throws(StreamError) in try stream.get(maxCount: 3) }
        var observer = NoWaitObserver()
        XCTAssertEqual(stream.get(timeoutNanoseconds: -1, observer: &observer), .failure(.failed(failure)))
        stream.close(failure: ProducerFailure(code: 1, message: "later"))
        XCTAssertEqual(stream.failure, failure, "only the first close records a failure")
    }

    func testCloseWithFailureWakesBlockedConsumersAndEndsIteration() throws {
        let stream = try BoundedStream<Int>(capacity: 4)
        let failure = ProducerFailure(code: 0, message: "parse error")
        let ending = Locked<StreamError?>(nil)
        let consumer = TestThread {
            do throws(StreamError) { _ = try stream.get(timeout: .seconds(30)) } catch { ending.withLock { $0 = error } }
        }
        XCTAssertTrue(eventually { stream.stats().consumerWaits == 1 })
        stream.close(failure: failure)
        XCTAssertTrue(consumer.join(timeout: 10))
        XCTAssertEqual(ending.current, .failed(failure))

        let iterated = try BoundedStream<Int>(capacity: 4)
        try iterated.put(1)
        iterated.close(failure: failure)
        XCTAssertEqual(Array(iterated), [1], "iteration ends at the failure")
        XCTAssertNil(try BoundedStream<Int>(capacity: 1).failure)
    }

    // MARK: reserve and settle

    /// Takes up to `max` items as reserved, without waiting.
    private func reserve<T>(_ stream: BoundedStream<T>, _ max: Int) -> [T] {
        let buffer = UnsafeMutableBufferPointer<T>.allocate(capacity: max)
        defer { buffer.deallocate() }
        var observer = NoWaitObserver()
        guard case .success(let n) = stream.get(into: buffer, reserving: true, timeoutNanoseconds: 0,
                                                observer: &observer) else { return [] }
        return (0..<n).map { (buffer.baseAddress! + $0).move() }
    }

    func testReservedItemsHoldTheirRoomUntilSettled() throws {
        let stream = try BoundedStream<Int>(capacity: 2)
        try stream.put(1)
        try stream.put(2)
        XCTAssertEqual(reserve(stream, 2), [1, 2])
        XCTAssertEqual(stream.count, 2, "reserved items are still in the depth")
        XCTAssertEqual(stream.stats().consumed, 0)
        assertThrows(.full) { () throws(StreamError) in try stream.put(3, timeout: .zero) }
        // A blocked put is woken by the settle that frees the room.
        let triggered = Locked(false)
        let settler = TestThread {
            usleep(100_000)
            triggered.withLock { $0 = true }
            stream.settle(delivered: 2)
        }
        XCTAssertTrue(try stream.put(3, timeout: .seconds(30)))
        XCTAssertTrue(triggered.current, "put returned before the settle freed room")
        XCTAssertTrue(settler.join())
        let stats = stream.stats()
        XCTAssertEqual(stats.consumed, 2)
        XCTAssertEqual(stats.depth, 1)
        XCTAssertLessThanOrEqual(stats.peakDepth, 2)
        XCTAssertIdentity(stats)
    }

    func testSettleHandsBackUndeliveredItemsToTheFrontAndWakesAConsumer() throws {
        let stream = try BoundedStream<Int>(capacity: 4)
        for i in 0..<3 { try stream.put(i) }
        let taken = reserve(stream, 3)
        stream.settle(delivered: 1, returning: Array(taken.dropFirst()))
        XCTAssertEqual(buffered(stream), [1, 2])
        XCTAssertEqual(stream.stats().consumed, 1)
        XCTAssertIdentity(stream.stats())
        XCTAssertEqual(try stream.get(maxCount: 10), [1, 2])

        try stream.put(7)
        _ = reserve(stream, 1)
        let triggered = Locked(false)
        let trigger = TestThread {
            usleep(100_000)
            triggered.withLock { $0 = true }
            stream.settle(delivered: 0, returning: [7])
        }
        XCTAssertEqual(try stream.get(timeout: .seconds(30)), 7)
        XCTAssertTrue(triggered.current, "get returned before the item was handed back")
        XCTAssertTrue(trigger.join())
    }

    func testMarkedDeliveriesFreeTheirRoomWithoutALock() throws {
        let stream = try BoundedStream<Int>(capacity: 2)
        try stream.put(1)
        try stream.put(2)
        _ = reserve(stream, 2)
        var observer = NoWaitObserver()
        XCTAssertEqual(stream.put(3, timeoutNanoseconds: 0, observer: &observer), .full,
                       "reserved items hold their room")
        stream.markDelivered(2)
        XCTAssertEqual(stream.put(3, timeoutNanoseconds: 0, observer: &observer), .stored,
                       "the delivered items' room is free for the next put")
        let stats = stream.stats()
        XCTAssertEqual(stats.consumed, 2)
        XCTAssertEqual(stats.depth, 1)
        XCTAssertEqual(stats.producerWaits, 0)
        XCTAssertIdentity(stats)
    }

    func testAParkedProducerTakesRoomBelowTheWorthwhileBatch() throws {
        // Capacity 256: a parked producer, just after its spin, waits for a worthwhile
        // batch of published deliveries (32). A single one must still reach it: at its
        // next recheck while it waits, and before a timed put gives up.
        let stream = try BoundedStream<Int>(capacity: 256)
        var observer = NoWaitObserver()
        _ = stream.put(contentsOf: Array(0..<256), timeoutNanoseconds: 0, observer: &observer)
        _ = reserve(stream, 256)
        let marker = TestThread {
            usleep(50_000)
            stream.markDelivered(1)  // one item delivered, then the consumer does nothing
        }
        XCTAssertTrue(try stream.put(256, timeout: .seconds(30)), "a waiting producer is never starved")
        XCTAssertTrue(marker.join())
        stream.markDelivered(1)
        XCTAssertTrue(try stream.put(257, timeout: .microseconds(10)), "the last look before a timeout takes any room")
        XCTAssertEqual(stream.stats().depth, 256)
        XCTAssertIdentity(stream.stats())
    }

    func testItemsHandedBackAfterAnImmediateCloseGoToOnDrop() throws {
        let tracker = DeinitTracker()
        let drops = DropLog<TrackedItem> { $0.id }
        let stream = try BoundedStream<TrackedItem>(capacity: 4, onDrop: drops.onDrop)
        for i in 0..<3 { try stream.put(TrackedItem(i, tracker)) }
        var readAhead = reserve(stream, 2)
        stream.close(immediate: true)
        XCTAssertEqual(drops.ids(.discardedOnClose), [2])
        stream.settle(delivered: 0, returning: readAhead)
        readAhead.removeAll()
        XCTAssertEqual(drops.ids(.discardedOnClose), [2, 0, 1])
        XCTAssertEqual(stream.count, 0)
        let stats = stream.stats()
        XCTAssertEqual(stats.droppedOnClose, 3)
        XCTAssertIdentity(stats)
        XCTAssertEqual(tracker.live, 0, "released, not kept")
    }

    // MARK: join and taskDone

    func testJoinWaitsUntilEveryTaskIsDone() throws {
        let stream = try BoundedStream<Int>(capacity: 8)
        for i in 0..<3 { try stream.put(i) }
        let done = Locked(0)
        let worker = TestThread {
            for _ in 0..<3 {
                _ = try? stream.get(timeout: .seconds(30))
                usleep(30_000)
                done.withLock { $0 += 1 }
                try? stream.taskDone()
            }
        }
        try stream.join(timeout: .seconds(30))
        XCTAssertEqual(done.current, 3, "join returned before every task was done")
        XCTAssertTrue(worker.join())
        XCTAssertEqual(stream.stats().unfinishedTasks, 0)
    }

    func testTaskDoneTooManyThrowsAndChangesNothing() throws {
        let stream = try BoundedStream<Int>(capacity: 4)
        assertThrows(.tooManyTaskDone) { () throws(StreamError) in try stream.taskDone() }
        try stream.put(1)
        try stream.put(2)
        XCTAssertFalse(stream.taskDone(count: 3))
        XCTAssertEqual(stream.stats().unfinishedTasks, 2)
        XCTAssertTrue(stream.taskDone(count: 2))
        assertThrows(.tooManyTaskDone) { () throws(StreamError) in try stream.taskDone() }
        XCTAssertEqual(stream.count, 2, "task accounting never touches items")
    }

    func testJoinIsReleasedByAnImmediateCloseDiscardingTheBacklog() throws {
        let stream = try BoundedStream<Int>(capacity: 4)
        try stream.put(1)
        try stream.put(2)
        let outcome = Locked<JoinOutcome?>(nil)
        let joiner = TestThread {
            var observer = NoWaitObserver()
            let result = stream.join(timeoutNanoseconds: 30_000_000_000, observer: &observer)
            outcome.withLock { $0 = result }
        }
        usleep(50_000)
        XCTAssertNil(outcome.current, "join returned with tasks unfinished")
        stream.close(immediate: true)
        XCTAssertTrue(joiner.join(timeout: 10))
        XCTAssertEqual(outcome.current, .finished)
    }

    func testEvictionsFinishTheirTasks() throws {
        let stream = try BoundedStream<Int>(capacity: 1, policy: .dropOldest)
        try stream.put(1)
        try stream.put(2)  // evicts 1: its task is finished
        XCTAssertEqual(stream.stats().unfinishedTasks, 1)
        _ = try stream.get()
        try stream.taskDone()
        try stream.join(timeout: .zero)
    }

    // MARK: wait observer

    func testObserverIsNotCalledWhenNoWaitIsNeeded() throws {
        let stream = try BoundedStream<Int>(capacity: 2)
        let log = HookLog()
        var observer = RecordingObserver(log: log, pollIntervalNanoseconds: 1_000_000)
        XCTAssertEqual(stream.put(1, timeoutNanoseconds: -1, observer: &observer), .stored)
        XCTAssertEqual(stream.put(contentsOf: [2], timeoutNanoseconds: -1, observer: &observer).outcome, .stored)
        XCTAssertEqual(stream.get(timeoutNanoseconds: -1, observer: &observer), .success(1))
        let buffer = UnsafeMutableBufferPointer<Int>.allocate(capacity: 4)
        defer { buffer.deallocate() }
        XCTAssertEqual(stream.get(into: buffer, timeoutNanoseconds: -1, observer: &observer), .success(1))
        XCTAssertEqual(stream.get(timeoutNanoseconds: 0, observer: &observer), .failure(.empty))
        try stream.put(3)
        XCTAssertEqual(stream.put(4, timeoutNanoseconds: 0, observer: &observer), .stored)
        XCTAssertEqual(stream.put(5, timeoutNanoseconds: 0, observer: &observer), .full)
        stream.close()
        XCTAssertEqual(stream.put(6, timeoutNanoseconds: -1, observer: &observer), .closed)
        XCTAssertEqual(log.events.current, [], "hooks only run around a wait")
    }

    /// Runs `body` on a thread with a deadlock guard and returns what it returned.
    private func runGuarded<T: Sendable>(
        _ what: String, file: StaticString = #filePath, line: UInt = #line,
        _ body: @escaping @Sendable () -> T
    ) -> T? {
        let result = Locked<T?>(nil)
        let thread = TestThread { let value = body(); result.withLock { $0 = value } }
        guard thread.join(timeout: 20) else {
            XCTFail("\(what) never returned: a hook ran with the stream lock held (deadlock)",
                    file: file, line: line)
            return nil
        }
        return result.current
    }

    /// A probe that touches the stream from inside a hook: it deadlocks under the lock.
    private func lockProbe<T>(_ stream: BoundedStream<T>) -> @Sendable (String) -> Void {
        { _ in
            _ = stream.count
            _ = stream.stats()
        }
    }

    func testObserverCancelsAGetAfterNPollsAndNothingChanges() throws {
        let stream = try BoundedStream<Int>(capacity: 2)
        let log = HookLog()
        let before = stream.stats()
        let probe = lockProbe(stream)
        let result = runGuarded("get") {
            var observer = RecordingObserver(log: log, pollIntervalNanoseconds: 2_000_000, cancelOnPoll: 3,
                                             probe: { probe($0) })
            return stream.get(timeoutNanoseconds: 30_000_000_000, observer: &observer)
        }
        XCTAssertEqual(result, .failure(.cancelled))
        XCTAssertEqual(log.events.current, ["willWait", "poll", "poll", "poll", "didWait"])
        XCTAssertEqual(log.violations.current, [])
        let after = stream.stats()
        XCTAssertEqual(after.consumed, before.consumed)
        XCTAssertEqual(after.depth, 0)
        XCTAssertEqual(after.consumerWaits, 1)
        // The stream still works, and the next waiter is independent of the cancelled one.
        try stream.put(1)
        XCTAssertEqual(try stream.get(timeout: .seconds(5)), 1)
    }

    func testObserverCancelsAPutAndTheCallerKeepsTheItem() throws {
        let tracker = DeinitTracker()
        let drops = DropLog<TrackedItem> { $0.id }
        let stream = try BoundedStream<TrackedItem>(capacity: 1, onDrop: drops.onDrop)
        try stream.put(TrackedItem(0, tracker))
        let log = HookLog()
        let probe = lockProbe(stream)
        let mine = TrackedItem(1, tracker)
        let outcome = runGuarded("put") {
            var observer = RecordingObserver(log: log, pollIntervalNanoseconds: 2_000_000, cancelOnPoll: 2,
                                             probe: { probe($0) })
            return stream.put(mine, timeoutNanoseconds: 30_000_000_000, observer: &observer)
        }
        XCTAssertEqual(outcome, .cancelled)
        XCTAssertEqual(log.events.current, ["willWait", "poll", "poll", "didWait"])
        XCTAssertEqual(buffered(stream).map(\.id), [0])
        XCTAssertEqual(drops.count, 0)
        let stats = stream.stats()
        XCTAssertEqual(stats.produced, 1)
        XCTAssertEqual(stats.rejected, 0, "a cancelled put is not a rejection")
        XCTAssertEqual(stats.producerWaits, 1)
        XCTAssertIdentity(stats)
        XCTAssertEqual(mine.id, 1)
    }

    func testObserverCancelsABatchPutAfterWhatItTook() throws {
        let stream = try BoundedStream<Int>(capacity: 2)
        try stream.put(0)
        let log = HookLog()
        let probe = lockProbe(stream)
        let result = runGuarded("put(contentsOf:)") {
            var observer = RecordingObserver(log: log, pollIntervalNanoseconds: 2_000_000, cancelOnPoll: 1,
                                             probe: { probe($0) })
            let (taken, outcome) = stream.put(contentsOf: [1, 2, 3], timeoutNanoseconds: -1, observer: &observer)
            return "\(taken) \(outcome)"
        }
        XCTAssertEqual(result, "1 cancelled")
        XCTAssertEqual(buffered(stream), [0, 1])
        XCTAssertEqual(log.events.current, ["willWait", "poll", "didWait"])
    }

    func testObserverCancelsGetIntoAndJoin() throws {
        let stream = try BoundedStream<Int>(capacity: 2)
        let log = HookLog()
        let probe = lockProbe(stream)
        let got = runGuarded("get(into:)") {
            var observer = RecordingObserver(log: log, pollIntervalNanoseconds: 2_000_000, cancelOnPoll: 2,
                                             probe: { probe($0) })
            let buffer = UnsafeMutableBufferPointer<Int>.allocate(capacity: 4)
            defer { buffer.deallocate() }
            return stream.get(into: buffer, timeoutNanoseconds: -1, observer: &observer)
        }
        XCTAssertEqual(got, .failure(.cancelled))
        XCTAssertEqual(log.events.current, ["willWait", "poll", "poll", "didWait"])

        try stream.put(1)
        let joinLog = HookLog()
        let joined = runGuarded("join") {
            var observer = RecordingObserver(log: joinLog, pollIntervalNanoseconds: 2_000_000, cancelOnPoll: 2,
                                             probe: { probe($0) })
            return stream.join(timeoutNanoseconds: -1, observer: &observer)
        }
        XCTAssertEqual(joined, .cancelled)
        XCTAssertEqual(joinLog.events.current, ["willWait", "poll", "poll", "didWait"])
        XCTAssertEqual(stream.stats().unfinishedTasks, 1)
    }

    func testHooksRunOncePerWaitWithoutTheLockForEveryBlockingCall() throws {
        // Each call waits ~100 ms for a peer, polling every millisecond; every hook calls into
        // the stream (a deadlock if the lock were held) and the episode must be balanced.
        typealias Scenario = (name: String, capacity: Int, prefill: [Int],
                              call: @Sendable (BoundedStream<Int>, inout RecordingObserver) -> String,
                              peer: @Sendable (BoundedStream<Int>) -> Void, expected: String)
        let scenarios: [Scenario] = [
            ("get", 2, [], { s, o in "\(s.get(timeoutNanoseconds: -1, observer: &o))" },
             { _ = try? $0.put(7) }, "success(7)"),
            ("put", 1, [0], { s, o in "\(s.put(1, timeoutNanoseconds: -1, observer: &o))" },
             { _ = try? $0.get() }, "stored"),
            ("get(into:)", 4, [], { s, o in
                let buffer = UnsafeMutableBufferPointer<Int>.allocate(capacity: 4)
                defer { buffer.deallocate() }
                let result = s.get(into: buffer, timeoutNanoseconds: -1, observer: &o)
                if case .success(let n) = result { return "\(Array(buffer[..<n]))" }
                return "\(result)"
            }, { s in
                var observer = NoWaitObserver()
                _ = s.put(contentsOf: [7, 8], timeoutNanoseconds: 0, observer: &observer)
            },
             "[7, 8]"),
            ("put(contentsOf:)", 1, [0], { s, o in
                let (taken, outcome) = s.put(contentsOf: [1], timeoutNanoseconds: -1, observer: &o)
                return "\(taken) \(outcome)"
            }, { _ = try? $0.get() }, "1 stored"),
            ("join", 2, [0], { s, o in "\(s.join(timeoutNanoseconds: -1, observer: &o))" },
             { s in _ = try? s.get(); try? s.taskDone() }, "finished"),
        ]
        for scenario in scenarios {
            let stream = try BoundedStream<Int>(capacity: scenario.capacity)
            for item in scenario.prefill { try stream.put(item) }
            let log = HookLog()
            let probe = lockProbe(stream)
            let call = scenario.call
            let peer = TestThread { usleep(100_000); scenario.peer(stream) }
            let result = runGuarded(scenario.name) {
                var observer = RecordingObserver(log: log, pollIntervalNanoseconds: 1_000_000,
                                                 probe: { probe($0) })
                return call(stream, &observer)
            }
            XCTAssertTrue(peer.join())
            XCTAssertEqual(result, scenario.expected, scenario.name)
            XCTAssertEqual(log.count("willWait"), 1, scenario.name)
            XCTAssertEqual(log.count("didWait"), 1, scenario.name)
            XCTAssertGreaterThan(log.count("poll"), 0, "\(scenario.name) waited ~100 ms with 1 ms polls")
            XCTAssertEqual(log.events.current.first, "willWait", scenario.name)
            XCTAssertEqual(log.events.current.last, "didWait", scenario.name)
            XCTAssertEqual(log.violations.current, [], scenario.name)
        }
    }

    func testBatchPutOpensOneEpisodePerWait() throws {
        let stream = try BoundedStream<Int>(capacity: 1)
        let log = HookLog()
        let probe = lockProbe(stream)
        let consumer = TestThread {
            for _ in 0..<4 {
                usleep(30_000)
                _ = try? stream.get(timeout: .seconds(30))
            }
        }
        let result = runGuarded("put(contentsOf:)") {
            var observer = RecordingObserver(log: log, probe: { probe($0) })
            let (taken, outcome) = stream.put(contentsOf: [1, 2, 3, 4], timeoutNanoseconds: -1, observer: &observer)
            return "\(taken) \(outcome)"
        }
        XCTAssertTrue(consumer.join())
        XCTAssertEqual(result, "4 stored")
        XCTAssertGreaterThanOrEqual(log.count("willWait"), 1)
        XCTAssertEqual(log.count("willWait"), log.count("didWait"), "balanced episodes")
        XCTAssertEqual(log.violations.current, [], "never nested, never unbalanced")
        XCTAssertEqual(UInt64(log.count("willWait")), stream.stats().producerWaits, "one episode per wait")
    }

    // MARK: a woken peer is signalled before didWait

    // `park`'s contract: the caller runs didWait only after signalling whoever its transition
    // woke, so a peer is not kept waiting while this thread takes back a runtime lock in
    // didWait (a binding's BPS_WAIT_END reacquires the GIL there). Each test below parks a
    // peer that only this call's transition can wake, then waits (up to 3 s) inside didWait
    // for the peer to finish.

    func testGetSignalsTheProducerItMadeRoomForBeforeDidWait() throws {
        try assertPeerWokenBeforeDidWait(consumerSide: true) { stream, observer in
            "\(stream.get(timeoutNanoseconds: 30_000_000_000, observer: &observer))"
        }
    }

    func testGetIntoSignalsTheProducerItMadeRoomForBeforeDidWait() throws {
        try assertPeerWokenBeforeDidWait(consumerSide: true) { stream, observer in
            let buffer = UnsafeMutableBufferPointer<Int>.allocate(capacity: 4)
            defer { buffer.deallocate() }
            return "\(stream.get(into: buffer, timeoutNanoseconds: 30_000_000_000, observer: &observer))"
        }
    }

    func testPutSignalsTheConsumerItFedBeforeDidWait() throws {
        try assertPeerWokenBeforeDidWait(consumerSide: false) { stream, observer in
            "\(stream.put(1, timeoutNanoseconds: 30_000_000_000, observer: &observer))"
        }
    }

    func testBatchPutSignalsTheConsumerItFedBeforeDidWait() throws {
        try assertPeerWokenBeforeDidWait(consumerSide: false) { stream, observer in
            let (taken, outcome) = stream.put(contentsOf: [1], timeoutNanoseconds: 30_000_000_000,
                                              observer: &observer)
            return "\(taken) \(outcome)"
        }
    }

    /// `consumerSide`: the call under test is a get on an empty capacity-1 stream; during its
    /// first poll an item arrives and a producer parks behind it, so the get's take must wake
    /// that producer. Otherwise the call is a put on a full capacity-1 stream; during its first
    /// poll the backlog is taken and a consumer parks, so the put must wake that consumer.
    private func assertPeerWokenBeforeDidWait(
        consumerSide: Bool, file: StaticString = #filePath, line: UInt = #line,
        _ call: @escaping @Sendable (BoundedStream<Int>, inout RecordingObserver) -> String
    ) throws {
        let stream = try BoundedStream<Int>(capacity: 1)
        if !consumerSide { try stream.put(0) }
        let peerDone = Locked(false)
        let peerDoneAtDidWait = Locked<Bool?>(nil)
        let peer = Locked<TestThread?>(nil)
        let log = HookLog()
        let result = runGuarded("the call", file: file, line: line) {
            var observer = RecordingObserver(log: log, pollIntervalNanoseconds: 5_000_000, probe: { event in
                if event == "poll" && log.count("poll") == 1 {
                    if consumerSide {
                        _ = try? stream.put(1, timeout: .zero)
                        peer.withLock { $0 = TestThread { _ = try? stream.put(2); peerDone.withLock { $0 = true } } }
                        _ = eventually { stream.stats().producerWaits == 1 }
                    } else {
                        _ = try? stream.get(timeout: .zero)
                        peer.withLock { $0 = TestThread { _ = try? stream.get(); peerDone.withLock { $0 = true } } }
                        _ = eventually { stream.stats().consumerWaits == 1 }
                    }
                    usleep(50_000)  // the peer is asleep on its condition by now
                } else if event == "didWait" {
                    let done = eventually(timeout: 3) { peerDone.current }
                    peerDoneAtDidWait.withLock { $0 = done }
                }
            })
            return call(stream, &observer)
        }
        XCTAssertNotNil(result, file: file, line: line)
        XCTAssertEqual(peerDoneAtDidWait.current, true,
                       "the peer this call woke was still parked while didWait ran: it was signalled only after didWait",
                       file: file, line: line)
        XCTAssertTrue(peer.current?.join() ?? false, "the peer never finished", file: file, line: line)
        XCTAssertTrue(peerDone.current, file: file, line: line)
    }

    // MARK: batch put outcomes

    func testBatchPutUnderRejectStopsAtTheFirstRefusal() throws {
        let stream = try BoundedStream<Int>(capacity: 3, policy: .reject)
        try stream.put(0)
        var observer = NoWaitObserver()
        let (taken, outcome) = stream.put(contentsOf: [10, 11, 12, 13], timeoutNanoseconds: -1, observer: &observer)
        XCTAssertEqual(taken, 2)
        XCTAssertEqual(outcome, .full)
        XCTAssertEqual(buffered(stream), [0, 10, 11])
        XCTAssertEqual(stream.stats().rejected, 1)
    }

    func testBatchPutUnderDropNewestShedsTheRest() throws {
        let stream = try BoundedStream<Int>(capacity: 3, policy: .dropNewest)
        try stream.put(0)
        var observer = NoWaitObserver()
        let (taken, outcome) = stream.put(contentsOf: [1, 2, 3, 4, 5], timeoutNanoseconds: -1, observer: &observer)
        XCTAssertEqual(taken, 2)
        XCTAssertEqual(outcome, .shed)
        XCTAssertEqual(buffered(stream), [0, 1, 2])
        let stats = stream.stats()
        XCTAssertEqual(stats.produced, 6, "shed items count as produced")
        XCTAssertEqual(stats.droppedShed, 3)
        XCTAssertEqual(stats.backpressureEvents, 3, "every shed item is a backpressure event")
        XCTAssertIdentity(stats)
    }

    func testBatchPutUnderBlockTimesOutWithPartialProgress() throws {
        let stream = try BoundedStream<Int>(capacity: 2)
        var observer = NoWaitObserver()
        let start = monotonicSeconds()
        let (taken, outcome) = stream.put(contentsOf: [1, 2, 3, 4], timeoutNanoseconds: 150_000_000,
                                          observer: &observer)
        XCTAssertGreaterThanOrEqual(monotonicSeconds() - start, 0.14)
        XCTAssertEqual(taken, 2)
        XCTAssertEqual(outcome, .full)
        XCTAssertEqual(buffered(stream), [1, 2])
        XCTAssertEqual(stream.stats().rejected, 1)
        XCTAssertEqual(stream.stats().producerWaits, 1)

        let (none, nonBlocking) = stream.put(contentsOf: [5], timeoutNanoseconds: 0, observer: &observer)
        XCTAssertEqual(none, 0)
        XCTAssertEqual(nonBlocking, .full)
        XCTAssertEqual(stream.stats().producerWaits, 1, "timeout 0 never waits")
    }

    func testBatchPutUnderDropPoliciesTakesEverything() throws {
        let evictions = DropLog<Int> { $0 }
        let oldest = try BoundedStream<Int>(capacity: 2, policy: .dropOldest, onDrop: evictions.onDrop)
        var observer = NoWaitObserver()
        let (takenOldest, outcomeOldest) = oldest.put(contentsOf: [1, 2, 3, 4, 5], timeoutNanoseconds: 0,
                                                      observer: &observer)
        XCTAssertEqual(takenOldest, 5)
        XCTAssertEqual(outcomeOldest, .stored)
        XCTAssertEqual(evictions.ids(.evicted), [1, 2, 3])
        XCTAssertEqual(buffered(oldest), [4, 5])

        let clearings = DropLog<Int> { $0 }
        let all = try BoundedStream<Int>(capacity: 2, policy: .dropAll, onDrop: clearings.onDrop)
        let (takenAll, outcomeAll) = all.put(contentsOf: [1, 2, 3, 4, 5], timeoutNanoseconds: 0, observer: &observer)
        XCTAssertEqual(takenAll, 5)
        XCTAssertEqual(outcomeAll, .stored)
        XCTAssertEqual(clearings.ids(.cleared), [1, 2, 3, 4])
        XCTAssertEqual(buffered(all), [5])
        XCTAssertIdentity(all.stats())
    }

    func testBatchPutOnAClosedStreamOrWithNothingToPut() throws {
        let stream = try BoundedStream<Int>(capacity: 2)
        var observer = NoWaitObserver()
        let (takenEmpty, outcomeEmpty) = stream.put(contentsOf: [Int](), timeoutNanoseconds: 0, observer: &observer)
        XCTAssertEqual(takenEmpty, 0)
        XCTAssertEqual(outcomeEmpty, .stored)
        stream.close()
        let (taken, outcome) = stream.put(contentsOf: [1, 2], timeoutNanoseconds: -1, observer: &observer)
        XCTAssertEqual(taken, 0)
        XCTAssertEqual(outcome, .closed)
        XCTAssertEqual(stream.stats().produced, 0)
    }

    func testBatchPutThroughASmallBlockStreamDeliversEverythingInOrder() throws {
        let stream = try BoundedStream<Int>(capacity: 4)
        let got = Locked([Int]())
        let consumer = TestThread {
            for item in stream { got.withLock { $0.append(item) } }
        }
        var observer = NoWaitObserver()
        let (taken, outcome) = stream.put(contentsOf: Array(0..<5_000), timeoutNanoseconds: -1, observer: &observer)
        XCTAssertEqual(taken, 5_000)
        XCTAssertEqual(outcome, .stored)
        stream.close()
        XCTAssertTrue(consumer.join())
        XCTAssertEqual(got.current, Array(0..<5_000))
        XCTAssertIdentity(stream.stats())
    }

    // MARK: batch get

    func testGetIntoTakesUpToTheBufferOldestFirst() throws {
        let stream = try BoundedStream<Int>(capacity: 8)
        for i in 0..<6 { try stream.put(i) }
        let buffer = UnsafeMutableBufferPointer<Int>.allocate(capacity: 4)
        defer { buffer.deallocate() }
        var observer = NoWaitObserver()
        XCTAssertEqual(stream.get(into: buffer, timeoutNanoseconds: 0, observer: &observer), .success(4))
        XCTAssertEqual(Array(buffer), [0, 1, 2, 3])
        XCTAssertEqual(stream.get(into: buffer, timeoutNanoseconds: 0, observer: &observer), .success(2))
        XCTAssertEqual(Array(buffer[..<2]), [4, 5])
        XCTAssertEqual(stream.get(into: buffer, timeoutNanoseconds: 0, observer: &observer), .failure(.empty))
        let start = monotonicSeconds()
        XCTAssertEqual(stream.get(into: buffer, timeoutNanoseconds: 100_000_000, observer: &observer), .failure(.empty))
        XCTAssertGreaterThanOrEqual(monotonicSeconds() - start, 0.09)
        stream.close()
        XCTAssertEqual(stream.get(into: buffer, timeoutNanoseconds: -1, observer: &observer), .failure(.closed))
        XCTAssertEqual(stream.stats().consumed, 6)
    }

    func testGetIntoBlocksUntilItemsArrive() throws {
        let stream = try BoundedStream<Int>(capacity: 8)
        let triggered = Locked(false)
        let trigger = TestThread {
            usleep(100_000)
            triggered.withLock { $0 = true }
            var observer = NoWaitObserver()
            _ = stream.put(contentsOf: [1, 2, 3], timeoutNanoseconds: 0, observer: &observer)
        }
        let buffer = UnsafeMutableBufferPointer<Int>.allocate(capacity: 8)
        defer { buffer.deallocate() }
        var observer = NoWaitObserver()
        let result = stream.get(into: buffer, timeoutNanoseconds: 30_000_000_000, observer: &observer)
        XCTAssertTrue(triggered.current, "get(into:) returned before the put")
        guard case .success(let n) = result else { return XCTFail("\(result)") }
        XCTAssertGreaterThanOrEqual(n, 1)
        XCTAssertEqual(Array(buffer[..<n]), Array([1, 2, 3].prefix(n)))
        XCTAssertTrue(trigger.join())
    }

    func testGetMaxCount() throws {
        let stream = try BoundedStream<Int>(capacity: nil)
        assertThrows(.invalidArgument("maxCount must be at least 1")) { () throws(StreamError) in
            try stream.get(maxCount: 0)
        }
        for i in 0..<10 { try stream.put(i) }
        XCTAssertEqual(try stream.get(maxCount: 3), [0, 1, 2])
        XCTAssertEqual(try stream.get(maxCount: 100), Array(3..<10))
        assertThrows(.empty) { () throws(StreamError) in try stream.get(maxCount: 5, timeout: .zero) }
        for i in 0..<600 { try stream.put(i) }
        XCTAssertEqual(try stream.get(maxCount: 1_000), Array(0..<600), "more than 256 at once")
        stream.close()
        assertThrows(.closed) { () throws(StreamError) in try stream.get(maxCount: 5) }
    }

    // MARK: iteration and stats

    func testIterationEndsAtCloseAfterTheDrain() throws {
        let stream = try BoundedStream<Int>(capacity: 16)
        let producer = TestThread {
            for i in 0..<2_000 { _ = try? stream.put(i) }
            stream.close()
        }
        var got: [Int] = []
        for item in stream { got.append(item) }
        XCTAssertEqual(got, Array(0..<2_000))
        XCTAssertTrue(producer.join())
    }

    func testStatsRatesAfterTraffic() throws {
        let stream = try BoundedStream<Int>(capacity: nil)
        usleep(20_000)
        for i in 0..<100 { try stream.put(i) }
        for _ in 0..<40 { _ = try stream.get() }
        let stats = stream.stats()
        XCTAssertGreaterThan(stats.windowSeconds, 0)
        XCTAssertGreaterThan(stats.producedPerSecond, 0)
        XCTAssertGreaterThan(stats.consumedPerSecond, 0)
        XCTAssertGreaterThanOrEqual(stats.producedPerSecond, stats.consumedPerSecond,
                                    "more produced than consumed over the same window")
        XCTAssertEqual(stats.depth, 60)
        XCTAssertIdentity(stats)
        for _ in 0..<5 {
            let again = stream.stats()
            XCTAssertGreaterThanOrEqual(again.producedPerSecond, 0)
            XCTAssertGreaterThanOrEqual(again.consumedPerSecond, 0)
            XCTAssertGreaterThanOrEqual(again.windowSeconds, 0)
        }
    }
}

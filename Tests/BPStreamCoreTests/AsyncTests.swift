// The async API (BoundedStream+Async.swift): overload resolution, every policy, async and
// blocking peers on one stream, timeouts, cancellation at each point of a wait (made
// deterministic with an executor the test runs by hand), close, and a randomized run of
// thousands of cancellations with unique ids: nothing lost, nothing duplicated.
import Foundation
import XCTest
@testable import BPStreamCore

/// Runs `body`, failing the test (and cancelling the body) if it takes longer than
/// `seconds`: a hang guard, so a lost wake-up fails instead of hanging the run.
private func withinDeadline<T: Sendable>(
    _ seconds: Double = 30, file: StaticString = #filePath, line: UInt = #line,
    _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    let work = Task { try await body() }
    let guardTask = Task {
        try await Task.sleep(for: .seconds(seconds))
        XCTFail("hung for \(seconds) s", file: file, line: line)
        work.cancel()
    }
    defer { guardTask.cancel() }
    return try await work.value
}

/// Runs `body` and checks it throws exactly `expected`.
private func assertThrows<T>(
    _ expected: StreamError, file: StaticString = #filePath, line: UInt = #line,
    _ body: () async throws -> T
) async {
    do {
        let value = try await body()
        XCTFail("expected \(expected), got \(value)", file: file, line: line)
    } catch {
        XCTAssertEqual(error as? StreamError, expected, file: file, line: line)
    }
}

/// A task executor that runs jobs only when the test says so (`runUntilIdle`), on the
/// test's thread: it lets a test place a cancellation exactly between a waiter's wake-up
/// and its retry.
private final class ManualExecutor: TaskExecutor, @unchecked Sendable {
    private let jobs = Locked([UnownedJob]())

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        jobs.withLock { $0.append(job) }
    }

    /// Runs queued jobs, and the ones they queue, until none is left.
    func runUntilIdle() {
        while let job = jobs.withLock({ $0.isEmpty ? nil : $0.removeFirst() }) {
            job.runSynchronously(on: asUnownedTaskExecutor())
        }
    }
}

/// An async get on `executor` whose outcome lands in a box the test reads.
private func startGet(
    _ stream: BoundedStream<Int>, on executor: ManualExecutor
) -> (Task<Void, Never>, Locked<Result<Int, StreamError>?>) {
    let outcome = Locked<Result<Int, StreamError>?>(nil)
    let task = Task(executorPreference: executor) {
        do throws(StreamError) {
            let item = try await stream.get()
            outcome.withLock { $0 = .success(item) }
        } catch {
            outcome.withLock { $0 = .failure(error) }
        }
    }
    return (task, outcome)
}

final class AsyncTests: XCTestCase {

    // MARK: API shape

    /// In a synchronous context `put`/`get` are the blocking calls; in an async one the
    /// async overloads, which suspend: more waiting puts than the cooperative pool has
    /// threads (2 here) would deadlock if any of them blocked a thread.
    func testOverloadsResolveByContextAndAsyncWaitsBlockNoThread() async throws {
        let stream = try BoundedStream<Int>(capacity: 1)
        // Synchronous context (a thread): the blocking put, which waits out its timeout.
        let blocked = Locked<StreamError?>(nil)
        try await stream.put(0)
        let thread = TestThread {
            let start = monotonicSeconds()
            do throws(StreamError) { try stream.put(-1, timeout: .milliseconds(50)) } catch {
                blocked.withLock { $0 = error }
            }
            XCTAssertGreaterThanOrEqual(monotonicSeconds() - start, 0.04, "the sync put did not wait")
        }
        XCTAssertTrue(thread.join())
        XCTAssertEqual(blocked.current, .full)

        let waiting = 16
        try await withinDeadline {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for i in 1...waiting { group.addTask { try await stream.put(i) } }
                // Every putter is suspended on the full stream before the consumer starts.
                while stream.stats().producerWaits < UInt64(1 + waiting) { await Task.yield() }
                var got: [Int] = []
                for _ in 0...waiting { got.append(try await stream.get()) }
                try await group.waitForAll()
                XCTAssertEqual(got.sorted(), Array(0...waiting))
            }
        }
        let stats = stream.stats()
        XCTAssertEqual(stats.producerWaits, UInt64(1 + waiting), "the sync wait, then one per async put")
        XCTAssertEqual(stats.rejected, 1, "the sync put's timeout")
        XCTAssertIdentity(stats)
    }

    // MARK: policies

    func testEveryPolicyOnAFullStream() async throws {
        for policy in OverflowPolicy.allCases {
            let drops = DropLog<Int>(key: { $0 })
            let stream = try BoundedStream<Int>(capacity: 2, policy: policy, onDrop: drops.onDrop)
            try await stream.put(1)
            try await stream.put(2)
            switch policy {
            case .block:
                let putter = Task { try await stream.put(3) }
                while stream.stats().producerWaits == 0 { await Task.yield() }
                let got124 = try await stream.get()
                XCTAssertEqual(got124, 1)
                let stored = try await putter.value
                XCTAssertTrue(stored)
                let got128 = try await stream.get(maxCount: 8)
                XCTAssertEqual(got128, [2, 3])
            case .reject:
                await assertThrows(.full) { try await stream.put(3) }
                XCTAssertEqual(stream.stats().rejected, 1)
            case .dropNewest:
                let stored = try await stream.put(3)
                XCTAssertFalse(stored, "shed: the caller keeps it")
                XCTAssertEqual(stream.stats().droppedShed, 1)
            case .dropOldest:
                let stored = try await stream.put(3)
                XCTAssertTrue(stored)
                XCTAssertEqual(drops.ids(.evicted), [1])
                let got141 = try await stream.get(maxCount: 8)
                XCTAssertEqual(got141, [2, 3])
            case .dropAll:
                let stored = try await stream.put(3)
                XCTAssertTrue(stored)
                XCTAssertEqual(drops.ids(.cleared), [1, 2])
                let got147 = try await stream.get()
                XCTAssertEqual(got147, 3)
            }
            let stats = stream.stats()
            XCTAssertEqual(stats.producerWaits, policy == .block ? 1 : 0, "\(policy): only block waits")
            XCTAssertEqual(stats.producerWaits + stats.droppedShed + stats.droppedEvicted
                           + (stats.droppedCleared > 0 ? 1 : 0),
                           stats.backpressureEvents, "\(policy): \(stats)")
            XCTAssertIdentity(stats, "\(policy)")
        }
    }

    // MARK: producers and consumers of every kind

    func testAsyncProducerToAsyncConsumer() async throws {
        let stream = try BoundedStream<Int>(capacity: 8)
        let total = 20_000
        let received = try await withinDeadline { () async throws -> [Int] in
            let producer = Task {
                for i in 0..<total { try await stream.put(i) }
                stream.close()
            }
            var received: [Int] = []
            for try await item in stream { received.append(item) }
            try await producer.value
            return received
        }
        XCTAssertEqual(received, Array(0..<total), "in order, each once")
        let stats = stream.stats()
        XCTAssertEqual(stats.consumed, UInt64(total))
        XCTAssertIdentity(stats)
    }

    func testSyncThreadProducerToAsyncConsumers() async throws {
        let stream = try BoundedStream<Int>(capacity: 4)
        let total = 20_000
        let producer = TestThread {
            for i in 0..<total { _ = try? stream.put(i) }  // blocking: a thread
            stream.close()
        }
        let received = try await withinDeadline { () async throws -> [Int] in
            try await withThrowingTaskGroup(of: [Int].self) { group in
                for _ in 0..<3 {
                    group.addTask {
                        var mine: [Int] = []
                        for try await item in stream { mine.append(item) }
                        return mine
                    }
                }
                var all: [Int] = []
                for try await part in group {
                    XCTAssertEqual(part, part.sorted(), "one consumer sees the stream's order")
                    all += part
                }
                return all
            }
        }
        XCTAssertTrue(producer.join())
        XCTAssertEqual(received.sorted(), Array(0..<total))
        XCTAssertIdentity(stream.stats())
    }

    func testAsyncProducersToSyncThreadConsumer() async throws {
        let stream = try BoundedStream<Int>(capacity: 4)
        let total = 20_000
        let received = Locked([Int]())
        let consumer = TestThread {
            for item in stream { received.withLock { $0.append(item) } }  // blocking iteration
        }
        try await withinDeadline {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for half in 0..<2 {
                    group.addTask { for i in stride(from: half, to: total, by: 2) { try await stream.put(i) } }
                }
                try await group.waitForAll()
            }
        }
        stream.close()
        XCTAssertTrue(consumer.join())
        XCTAssertEqual(received.current.sorted(), Array(0..<total))
        let stats = stream.stats()
        XCTAssertGreaterThan(stats.producerWaits, 0, "a capacity of 4 made the async producers wait")
        XCTAssertIdentity(stats)
    }

    /// A thousand tasks wait on one empty stream; a thread's batch put must reach every one
    /// of them through chain wake-ups (one notification wakes one waiter, which passes on).
    func testAThousandWaitingGettersAreAllServed() async throws {
        let stream = try BoundedStream<Int>(capacity: nil)
        let waiters = 1_000
        let got = try await withinDeadline { () async throws -> [Int] in
            try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<waiters { group.addTask { try await stream.get() } }
                while stream.stats().consumerWaits < UInt64(waiters) { await Task.yield() }
                let producer = TestThread {
                    var observer = NoWaitObserver()
                    _ = stream.put(contentsOf: Array(0..<waiters), timeoutNanoseconds: 0, observer: &observer)
                }
                XCTAssertTrue(producer.join())
                var got: [Int] = []
                for try await item in group { got.append(item) }
                return got
            }
        }
        XCTAssertEqual(got.sorted(), Array(0..<waiters))
        XCTAssertEqual(stream.stats().consumerWaits, UInt64(waiters), "one wait per get")
    }

    func testBatchGetWaitsThenTakesWhatIsThere() async throws {
        let stream = try BoundedStream<Int>(capacity: 8)
        let getter = Task { try await stream.get(maxCount: 5) }
        while stream.stats().consumerWaits == 0 { await Task.yield() }
        var observer = NoWaitObserver()
        _ = stream.put(contentsOf: [1, 2, 3], timeoutNanoseconds: 0, observer: &observer)
        let batch = try await getter.value
        XCTAssertFalse(batch.isEmpty)
        let rest = (try? await stream.get(maxCount: 5, timeout: .zero)) ?? []
        XCTAssertEqual(batch + rest, [1, 2, 3], "the batch took what was there, in order")
        await assertThrows(.invalidArgument("maxCount must be at least 1")) { try await stream.get(maxCount: 0) }
        XCTAssertIdentity(stream.stats())
    }

    // MARK: timeouts

    func testTimeoutsReportFullAndEmptyAndCountAsABlockingCallDoes() async throws {
        let stream = try BoundedStream<Int>(capacity: 1)
        var start = monotonicSeconds()
        await assertThrows(.empty) { try await stream.get(timeout: .milliseconds(50)) }
        XCTAssertGreaterThanOrEqual(monotonicSeconds() - start, 0.045)
        try await stream.put(1)
        start = monotonicSeconds()
        await assertThrows(.full) { try await stream.put(2, timeout: .milliseconds(50)) }
        XCTAssertGreaterThanOrEqual(monotonicSeconds() - start, 0.045)
        var stats = stream.stats()
        XCTAssertEqual(stats.consumerWaits, 1)
        XCTAssertEqual(stats.producerWaits, 1)
        XCTAssertEqual(stats.rejected, 1, "a put that timed out is rejected, as a blocking one")
        XCTAssertGreaterThanOrEqual(stats.producerWaitNanoseconds, 40_000_000)
        XCTAssertGreaterThanOrEqual(stats.consumerWaitNanoseconds, 40_000_000)

        // Zero (or negative) never waits: no wait counted, a full block stream rejects.
        await assertThrows(.full) { try await stream.put(3, timeout: .zero) }
        await assertThrows(.full) { try await stream.put(3, timeout: .seconds(-1)) }
        let got289 = try await stream.get(timeout: .zero)
        XCTAssertEqual(got289, 1)
        await assertThrows(.empty) { try await stream.get(timeout: .zero) }
        stats = stream.stats()
        XCTAssertEqual(stats.producerWaits, 1)
        XCTAssertEqual(stats.consumerWaits, 1)
        XCTAssertEqual(stats.rejected, 3)

        // An item that comes before the deadline is taken; the timer does not fire later.
        let getter = Task { try await stream.get(timeout: .seconds(20)) }
        while stream.stats().consumerWaits < 2 { await Task.yield() }
        try await stream.put(9)
        let got301 = try await getter.value
        XCTAssertEqual(got301, 9)
        XCTAssertIdentity(stream.stats())
    }

    // MARK: cancellation

    func testACancelledGetTakesNothingAndACancelledPutStoresNothing() async throws {
        let stream = try BoundedStream<Int>(capacity: 1)
        let getter = Task { try await stream.get() }
        while stream.stats().consumerWaits == 0 { await Task.yield() }
        getter.cancel()
        await assertThrows(.cancelled) { try await getter.value }
        try await stream.put(1)
        XCTAssertEqual(stream.count, 1, "the item stays for the next consumer")

        let putter = Task { try await stream.put(2) }
        while stream.stats().producerWaits == 0 { await Task.yield() }
        putter.cancel()
        await assertThrows(.cancelled) { try await putter.value }
        let got321 = try await stream.get(timeout: .zero)
        XCTAssertEqual(got321, 1)
        await assertThrows(.empty) { try await stream.get(timeout: .zero) }

        // Already cancelled: nothing is touched, even when an item or room is there.
        try await stream.put(3)
        let late = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            do throws(StreamError) { _ = try await stream.get() } catch { XCTAssertEqual(error, .cancelled) }
            do throws(StreamError) { _ = try await stream.get(maxCount: 4) } catch { XCTAssertEqual(error, .cancelled) }
        }
        await late.value
        XCTAssertEqual(stream.count, 1)
        let stats = stream.stats()
        XCTAssertEqual(stats.rejected, 0, "a cancelled put is not a rejection")
        XCTAssertIdentity(stats)
    }

    /// A waiter woken and THEN cancelled (before it could retry) passes its wake-up on:
    /// the next waiter gets the item.
    func testAWaiterCancelledAfterItsWakeUpPassesItOn() throws {
        let executor = ManualExecutor()
        let stream = try BoundedStream<Int>(capacity: 4)
        let (first, firstOutcome) = startGet(stream, on: executor)
        executor.runUntilIdle()
        let (_, secondOutcome) = startGet(stream, on: executor)
        executor.runUntilIdle()
        XCTAssertEqual(stream.stats().consumerWaits, 2, "both suspended")
        try stream.put(7)  // wakes the first: its retry is queued on the executor, not run
        first.cancel()
        executor.runUntilIdle()
        XCTAssertEqual(firstOutcome.current, .failure(.cancelled))
        XCTAssertEqual(secondOutcome.current, .success(7), "the wake-up was passed on")
        XCTAssertIdentity(stream.stats())
    }

    /// A waiter cancelled while queued leaves the queue: the wake-up goes to the next.
    func testAWaiterCancelledWhileQueuedTakesNoWakeUp() throws {
        let executor = ManualExecutor()
        let stream = try BoundedStream<Int>(capacity: 4)
        let (first, firstOutcome) = startGet(stream, on: executor)
        executor.runUntilIdle()
        let (_, secondOutcome) = startGet(stream, on: executor)
        executor.runUntilIdle()
        first.cancel()
        executor.runUntilIdle()
        XCTAssertEqual(firstOutcome.current, .failure(.cancelled))
        try stream.put(8)
        executor.runUntilIdle()
        XCTAssertEqual(secondOutcome.current, .success(8))
    }

    /// A woken waiter that finds the item gone (a thread took it) goes back to the FRONT.
    func testAWokenWaiterThatLostTheRaceKeepsItsPlace() throws {
        let executor = ManualExecutor()
        let stream = try BoundedStream<Int>(capacity: 4)
        let (_, firstOutcome) = startGet(stream, on: executor)
        executor.runUntilIdle()
        let (_, secondOutcome) = startGet(stream, on: executor)
        executor.runUntilIdle()
        try stream.put(1)
        XCTAssertEqual(try stream.get(timeout: .zero), 1)  // a blocking consumer is faster
        executor.runUntilIdle()
        XCTAssertNil(firstOutcome.current)
        XCTAssertNil(secondOutcome.current)
        try stream.put(2)
        executor.runUntilIdle()
        XCTAssertEqual(firstOutcome.current, .success(2), "FIFO: the first waiter is still first")
        XCTAssertNil(secondOutcome.current)
        try stream.put(3)
        executor.runUntilIdle()
        XCTAssertEqual(secondOutcome.current, .success(3))
        XCTAssertEqual(stream.stats().consumerWaits, 2, "one wait per get, however often woken")
    }

    /// Thousands of puts and gets (async, each in its own task, plus a blocking thread on
    /// each side) cancelled or timed out at random points: before the call, while queued,
    /// after a wake-up. Every id ends exactly once: consumed, still in the stream, or back
    /// with its putter.
    func testRandomizedCancellationsLoseAndDuplicateNothing() async throws {
        let stream = try BoundedStream<Int>(capacity: 3)
        let perProducer = 3_000
        let producers = 3
        let stored = Locked(Set<Int>())
        let returned = Locked(Set<Int>())
        let consumed = Locked([Int]())
        let cancellations = Locked(0)

        /// Runs `call` in its own task, cancelling it at a random point.
        @Sendable func disrupt<T: Sendable>(
            _ seed: UInt64, _ call: @escaping @Sendable () async throws(StreamError) -> T
        ) async -> Result<T, StreamError> {
            var random = SplitMix64(seed: seed)
            let task = Task { () async -> Result<T, StreamError> in
                do throws(StreamError) { return .success(try await call()) } catch { return .failure(error) }
            }
            switch random.next() % 6 {
            case 0: task.cancel()
            case 1: await Task.yield(); task.cancel()
            case 2: for _ in 0..<Int(random.next() % 4) { await Task.yield() }; task.cancel()
            case 3: try? await Task.sleep(for: .microseconds(Int(random.next() % 200))); task.cancel()
            default: break
            }
            let result = await task.value
            if case .failure(.cancelled) = result { cancellations.withLock { $0 += 1 } }
            return result
        }

        let blockingProducer = TestThread {
            for i in 0..<500 {
                let id = 1_000_000 + i
                do throws(StreamError) {
                    try stream.put(id, timeout: .milliseconds(2))
                    stored.withLock { _ = $0.insert(id) }
                } catch {
                    returned.withLock { _ = $0.insert(id) }
                }
            }
        }
        let blockingConsumerStop = Locked(false)
        let blockingConsumer = TestThread {
            while !blockingConsumerStop.current {
                if let item = try? stream.get(timeout: .milliseconds(1)) { consumed.withLock { $0.append(item) } }
                usleep(200)
            }
        }
        try await withinDeadline(50) {
            await withTaskGroup(of: Void.self) { group in
                for p in 0..<producers {
                    group.addTask {
                        for i in 0..<perProducer {
                            let id = p * perProducer + i
                            let timeout: Duration? = id % 7 == 0 ? .microseconds(300) : nil
                            switch await disrupt(UInt64(id), { () async throws(StreamError) -> Bool in
                                try await stream.put(id, timeout: timeout)
                            }) {
                            case .success: stored.withLock { _ = $0.insert(id) }
                            case .failure: returned.withLock { _ = $0.insert(id) }
                            }
                        }
                    }
                }
                for c in 0..<3 {
                    group.addTask {
                        var n: UInt64 = 0
                        while true {
                            n += 1
                            let seed = 0xC0FFEE &* UInt64(c + 1) &+ n, k = n
                            let result = await disrupt(seed) { () async throws(StreamError) -> [Int] in
                                k % 5 == 0 ? try await stream.get(maxCount: 2, timeout: .milliseconds(1))
                                    : [try await stream.get(timeout: k % 3 == 0 ? .microseconds(500) : nil)]
                            }
                            switch result {
                            case .success(let items): consumed.withLock { $0 += items }
                            case .failure(.closed): return
                            case .failure: continue
                            }
                        }
                    }
                }
                group.addTask {
                    // Close once every producer's id is accounted for.
                    let expected = producers * perProducer + 500
                    while stored.current.count + returned.current.count < expected {
                        try? await Task.sleep(for: .milliseconds(5))
                    }
                    blockingConsumerStop.withLock { $0 = true }
                    stream.close()
                }
            }
        }
        XCTAssertTrue(blockingProducer.join())
        XCTAssertTrue(blockingConsumer.join())
        var rest: [Int] = []
        while let item = try? await stream.get(timeout: .zero) { rest.append(item) }
        let all = consumed.current + rest
        XCTAssertEqual(all.count, Set(all).count, "an id was consumed twice")
        XCTAssertEqual(Set(all), stored.current, "consumed or left == stored")
        XCTAssertTrue(stored.current.isDisjoint(with: returned.current))
        XCTAssertEqual(stored.current.count + returned.current.count, producers * perProducer + 500)
        XCTAssertGreaterThan(cancellations.current, 2_000, "the run exercised cancellation")
        let stats = stream.stats()
        XCTAssertEqual(stats.produced, UInt64(stored.current.count))
        XCTAssertIdentity(stats)
    }

    // MARK: close

    func testCloseWakesEveryWaiter() async throws {
        let empty = try BoundedStream<Int>(capacity: 1)
        let full = try BoundedStream<Int>(capacity: 1)
        try await full.put(0)
        let outcomes = try await withinDeadline { () async -> [StreamError?] in
            await withTaskGroup(of: StreamError?.self) { group in
                for i in 0..<50 {
                    group.addTask {
                        do throws(StreamError) {
                            if i % 2 == 0 { _ = try await empty.get() } else { try await full.put(i) }
                            return nil
                        } catch { return error }
                    }
                }
                while empty.stats().consumerWaits < 25 || full.stats().producerWaits < 25 {
                    await Task.yield()
                }
                empty.close()
                full.close()
                var outcomes: [StreamError?] = []
                for await outcome in group { outcomes.append(outcome) }
                return outcomes
            }
        }
        XCTAssertEqual(outcomes, Array(repeating: .closed, count: 50))
        let left = try await full.get(timeout: .zero)
        XCTAssertEqual(left, 0, "the closed stream still drains")
        XCTAssertIdentity(full.stats())
    }

    func testIterationDrainsThenEndsOrThrowsTheProducersErrorInPlace() async throws {
        let stream = try BoundedStream<Int>(capacity: 8)
        let consumer = Task { () async -> ([Int], StreamError?) in
            var seen: [Int] = []
            do throws(StreamError) {
                for try await item in stream { seen.append(item) }
                return (seen, nil)
            } catch { return (seen, error) }
        }
        try await stream.put(1)
        try await stream.put(2)
        let failure = ProducerFailure(code: 5, message: "disk on fire")
        stream.close(failure: failure)
        let (seen, error) = await consumer.value
        XCTAssertEqual(seen, [1, 2], "every item before the error")
        XCTAssertEqual(error, .failed(failure))

        let plain = try BoundedStream<Int>(capacity: 8)
        try await plain.put(1)
        plain.close()
        var items: [Int] = []
        for try await item in plain { items.append(item) }
        XCTAssertEqual(items, [1])
        await assertThrows(.closed) { try await plain.put(2) }
    }
}

// Many producers and consumers on one small stream, under every policy, with a monitor
// thread checking `produced == consumed + dropped + depth` (and friends) in snapshots taken
// the whole time. Afterwards every item is accounted for exactly once: consumed, dropped
// through onDrop, or kept by its putter (shed or refused).
//
// Sized for a debug build on 2 cores (the whole file runs in well under a minute).
import Foundation
import XCTest
@testable import BPStreamCore

/// Snapshots a stream's stats in a loop on its own thread and checks each one.
private final class StatsMonitor: @unchecked Sendable {
    private let stop = Locked(false)
    private let problems = Locked([String]())
    private let snapshots = Locked(0)
    private var thread: TestThread!

    init<T>(_ stream: BoundedStream<T>, maximumDepth: UInt64) {
        thread = TestThread("stats-monitor") { [stop, problems, snapshots] in
            var last = StreamStats()
            func check(_ ok: Bool, _ what: @autoclosure () -> String) {
                if !ok { problems.withLock { if $0.count < 20 { $0.append(what()) } } }
            }
            while !stop.current {
                let s = stream.stats()
                snapshots.withLock { $0 += 1 }
                check(s.identityHolds, "identity broken: \(s)")
                check(s.depth <= maximumDepth, "depth \(s.depth) over \(maximumDepth)")
                check(s.peakDepth <= maximumDepth, "peak \(s.peakDepth) over \(maximumDepth)")
                check(s.produced >= last.produced && s.consumed >= last.consumed
                      && s.dropped >= last.dropped && s.rejected >= last.rejected,
                      "a counter went backwards: \(last) then \(s)")
                check(s.producedPerSecond >= 0 && s.consumedPerSecond >= 0 && s.windowSeconds >= 0,
                      "negative rate: \(s)")
                last = s
                sched_yield()
            }
        }
    }

    /// Stops the monitor and checks it saw enough and found nothing wrong.
    func finish(file: StaticString = #filePath, line: UInt = #line) {
        stop.withLock { $0 = true }
        XCTAssertTrue(thread.join(), "monitor hung", file: file, line: line)
        XCTAssertGreaterThan(snapshots.current, 10, "the monitor barely ran", file: file, line: line)
        XCTAssertEqual(problems.current, [], file: file, line: line)
    }
}

/// Per-item tally: how many times each id came out of the stream, by any route.
private struct Tally {
    private(set) var counts: [UInt8]
    init(total: Int) { counts = Array(repeating: 0, count: total) }

    mutating func add<S: Sequence>(_ ids: S) where S.Element == Int {
        for id in ids { counts[id] &+= 1 }
    }

    /// Ids that came out more than once, and ids that never came out.
    var duplicates: [Int] { counts.indices.filter { counts[$0] > 1 } }
    var missing: [Int] { counts.indices.filter { counts[$0] == 0 } }
}

final class ConcurrencyStressTests: XCTestCase {
    private let producers = 4
    private let consumers = 4
    private let capacity = 16

    /// Runs producers and consumers to the end and returns what each side saw.
    /// - `put` returns whether the stream took the item (false: the putter keeps it).
    private func run(
        _ stream: BoundedStream<Int>, itemsPerProducer: Int,
        put: @escaping @Sendable (BoundedStream<Int>, Int) -> Bool
    ) -> (consumedByConsumer: [[Int]], keptByPutters: [Int]) {
        let consumed = Locked([[Int]]())
        let kept = Locked([Int]())
        let consumerThreads = (0..<consumers).map { c in
            TestThread("consumer-\(c)") {
                var mine: [Int] = []
                mine.reserveCapacity(itemsPerProducer)
                for item in stream { mine.append(item) }
                consumed.withLock { $0.append(mine) }
            }
        }
        let producerThreads = (0..<producers).map { p in
            TestThread("producer-\(p)") {
                var mine: [Int] = []
                for i in 0..<itemsPerProducer {
                    let id = p * itemsPerProducer + i
                    if !put(stream, id) { mine.append(id) }
                }
                kept.withLock { $0.append(contentsOf: mine) }
            }
        }
        for thread in producerThreads { XCTAssertTrue(thread.join(timeout: 120), "a producer hung") }
        stream.close()
        for thread in consumerThreads { XCTAssertTrue(thread.join(timeout: 120), "a consumer hung") }
        return (consumed.current, kept.current)
    }

    /// Each consumer sees each producer's items in the order they were put (one FIFO).
    private func assertPerProducerOrder(_ consumedByConsumer: [[Int]], itemsPerProducer: Int,
                                        file: StaticString = #filePath, line: UInt = #line) {
        for items in consumedByConsumer {
            var last = Array(repeating: -1, count: producers)
            for id in items {
                let p = id / itemsPerProducer
                if id <= last[p] {
                    XCTFail("producer \(p)'s items out of order: \(id) after \(last[p])", file: file, line: line)
                    return
                }
                last[p] = id
            }
        }
    }

    func testBlockPolicyDeliversEveryItemExactlyOnce() throws {
        let perProducer = 50_000
        let stream = try BoundedStream<Int>(capacity: capacity, policy: .block)
        let monitor = StatsMonitor(stream, maximumDepth: UInt64(capacity))
        let (consumed, kept) = run(stream, itemsPerProducer: perProducer) { stream, id in
            (try? stream.put(id, timeout: .seconds(60))) == true
        }
        monitor.finish()
        XCTAssertEqual(kept, [], "a blocking put with a long timeout never gives up")
        var tally = Tally(total: producers * perProducer)
        for items in consumed { tally.add(items) }
        XCTAssertEqual(tally.duplicates.prefix(5), [], "consumed twice")
        XCTAssertEqual(tally.missing.prefix(5), [], "never consumed")
        assertPerProducerOrder(consumed, itemsPerProducer: perProducer)
        let stats = stream.stats()
        XCTAssertEqual(stats.produced, UInt64(producers * perProducer))
        XCTAssertEqual(stats.consumed, stats.produced)
        XCTAssertEqual(stats.dropped, 0)
        XCTAssertEqual(stats.rejected, 0)
        XCTAssertLessThanOrEqual(stats.peakDepth, UInt64(capacity))
        XCTAssertEqual(stats.producerWaits, stats.backpressureEvents)
        XCTAssertIdentity(stats)
    }

    func testDropPoliciesAccountForEveryItemExactlyOnce() throws {
        let perProducer = 50_000
        for policy in [OverflowPolicy.dropOldest, .dropNewest, .dropAll, .reject] {
            let dropped = Locked([Int]())
            let stream = try BoundedStream<Int>(capacity: capacity, policy: policy, onDrop: { item, reason in
                dropped.withLock { $0.append(item) }
            })
            let monitor = StatsMonitor(stream, maximumDepth: UInt64(capacity))
            let (consumed, kept) = run(stream, itemsPerProducer: perProducer) { stream, id in
                (try? stream.put(id)) == true  // false: shed (dropNewest) or refused (reject)
            }
            monitor.finish()
            var tally = Tally(total: producers * perProducer)
            for items in consumed { tally.add(items) }
            tally.add(dropped.current)
            tally.add(kept)
            XCTAssertEqual(tally.duplicates.prefix(5), [], "\(policy): an item came out twice")
            XCTAssertEqual(tally.missing.prefix(5), [], "\(policy): an item vanished")
            assertPerProducerOrder(consumed, itemsPerProducer: perProducer)

            let stats = stream.stats()
            let consumedCount = UInt64(consumed.map(\.count).reduce(0, +))
            XCTAssertEqual(stats.consumed, consumedCount, "\(policy)")
            XCTAssertEqual(stats.droppedEvicted + stats.droppedCleared, UInt64(dropped.current.count), "\(policy)")
            switch policy {
            case .dropNewest:
                XCTAssertEqual(stats.droppedShed, UInt64(kept.count))
                XCTAssertEqual(stats.produced, UInt64(producers * perProducer))
            case .reject:
                XCTAssertEqual(stats.rejected, UInt64(kept.count))
                XCTAssertEqual(stats.produced, UInt64(producers * perProducer - kept.count))
            default:
                XCTAssertEqual(kept, [], "\(policy) stores every put")
                XCTAssertEqual(stats.produced, UInt64(producers * perProducer))
            }
            XCTAssertEqual(stats.consumed + stats.dropped, stats.produced, "\(policy): drained at the end")
            XCTAssertLessThanOrEqual(stats.peakDepth, UInt64(capacity))
            XCTAssertIdentity(stats, "\(policy)")
        }
    }

    func testBatchPutsAndBatchGetsUnderContention() throws {
        let perProducer = 20_000
        let stream = try BoundedStream<Int>(capacity: capacity, policy: .block)
        let monitor = StatsMonitor(stream, maximumDepth: UInt64(capacity))
        let consumed = Locked([Int]())
        let consumerThreads = (0..<consumers).map { _ in
            TestThread {
                var mine: [Int] = []
                while let batch = try? stream.get(maxCount: 7, timeout: .seconds(60)) { mine += batch }
                consumed.withLock { $0 += mine }
            }
        }
        let producerThreads = (0..<producers).map { p in
            TestThread {
                var observer = NoWaitObserver()
                var next = p * perProducer
                let end = next + perProducer
                while next < end {
                    let batch = Array(next..<min(next + 11, end))
                    let (taken, outcome) = stream.put(contentsOf: batch, timeoutNanoseconds: 60_000_000_000,
                                                      observer: &observer)
                    XCTAssertEqual(taken, batch.count)
                    XCTAssertEqual(outcome, .stored)
                    next += batch.count
                }
            }
        }
        for thread in producerThreads { XCTAssertTrue(thread.join(timeout: 120)) }
        stream.close()
        for thread in consumerThreads { XCTAssertTrue(thread.join(timeout: 120)) }
        monitor.finish()
        var tally = Tally(total: producers * perProducer)
        tally.add(consumed.current)
        XCTAssertEqual(tally.duplicates.prefix(5), [])
        XCTAssertEqual(tally.missing.prefix(5), [])
        XCTAssertIdentity(stream.stats())
    }

    func testCloseReleasesBlockedProducers() throws {
        for immediate in [false, true] {
            let discarded = Locked([Int]())
            let stream = try BoundedStream<Int>(capacity: 4, policy: .block, onDrop: { item, reason in
                XCTAssertEqual(reason, .discardedOnClose)
                discarded.withLock { $0.append(item) }
            })
            let stored = Locked([Int]())
            let endings = Locked([StreamError]())
            let producerThreads = (0..<6).map { p in
                TestThread {
                    var i = 0
                    while true {
                        let id = p * 1_000 + i
                        do throws(StreamError) {
                            try stream.put(id, timeout: .seconds(60))
                            stored.withLock { $0.append(id) }
                        } catch {
                            endings.withLock { $0.append(error) }
                            return
                        }
                        i += 1
                    }
                }
            }
            // Nobody consumes: 4 puts succeed, then all six producers park.
            XCTAssertTrue(eventually { stream.stats().producerWaits == 6 }, "producers never all blocked")
            stream.close(immediate: immediate)
            for thread in producerThreads { XCTAssertTrue(thread.join(timeout: 10), "a producer stayed blocked") }
            XCTAssertEqual(endings.current, Array(repeating: .closed, count: 6))
            XCTAssertEqual(stored.current.count, 4)
            var remaining: [Int] = []
            while let item = try? stream.get(timeout: .zero) { remaining.append(item) }
            XCTAssertEqual((remaining + discarded.current).sorted(), stored.current.sorted(),
                           "immediate \(immediate): stored items drain or are discarded, once each")
            XCTAssertEqual(immediate ? remaining.count : discarded.current.count, 0)
            XCTAssertIdentity(stream.stats())
        }
    }

    func testCloseInTheMiddleOfTrafficLosesNothing() throws {
        for immediate in [false, true] {
            let discarded = Locked([Int]())
            let stream = try BoundedStream<Int>(capacity: 8, policy: .block, onDrop: { item, _ in
                discarded.withLock { $0.append(item) }
            })
            let monitor = StatsMonitor(stream, maximumDepth: 8)
            let stored = Locked([Int]())
            let consumed = Locked([Int]())
            let producerThreads = (0..<3).map { p in
                TestThread {
                    var mine: [Int] = []
                    for i in 0..<1_000_000 {
                        let id = p * 1_000_000 + i
                        guard (try? stream.put(id, timeout: .seconds(60))) != nil else { break }
                        mine.append(id)
                    }
                    stored.withLock { $0 += mine }
                }
            }
            let consumerThreads = (0..<3).map { _ in
                TestThread {
                    var mine: [Int] = []
                    for item in stream {
                        mine.append(item)
                        if mine.count % 64 == 0 { sched_yield() }  // let the backlog build up
                    }
                    consumed.withLock { $0 += mine }
                }
            }
            XCTAssertTrue(eventually { stream.stats().consumed >= 20_000 })
            stream.close(immediate: immediate)
            for thread in producerThreads + consumerThreads {
                XCTAssertTrue(thread.join(timeout: 30), "a thread stayed blocked after close")
            }
            monitor.finish()
            let out = consumed.current + discarded.current
            XCTAssertEqual(out.count, Set(out).count, "immediate \(immediate): an item came out twice")
            XCTAssertEqual(Set(out), Set(stored.current), "immediate \(immediate): stored == consumed + discarded")
            if !immediate { XCTAssertEqual(discarded.current, []) }
            let stats = stream.stats()
            XCTAssertEqual(stats.depth, 0)
            XCTAssertEqual(stats.produced, UInt64(stored.current.count))
            XCTAssertIdentity(stats)
        }
    }
}

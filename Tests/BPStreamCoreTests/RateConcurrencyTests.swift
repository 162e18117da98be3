// Rate controllers and the limiter with real threads: FIFO among many waiters, one
// wake-up per grant, rate changes waking sleepers, timeouts on either clock, cancellation
// through the wait observer, and hooks that run outside the controller's lock.
import Foundation
import XCTest
@testable import BPStreamCore

private let ms: Int64 = 1_000_000
private let second: Int64 = 1_000_000_000

final class RateConcurrencyTests: XCTestCase {
    /// Starts `count` threads running `body(index)`, each only once the previous one waits
    /// (`waiting()` reached its index + 1), so arrival order is the index order.
    private func startInOrder(
        _ count: Int, waiting: @escaping () -> Int, _ body: @escaping @Sendable (Int) -> Void
    ) -> [TestThread] {
        var threads: [TestThread] = []
        for index in 0..<count {
            threads.append(TestThread("waiter-\(index)") { body(index) })
            XCTAssertTrue(eventually { waiting() == index + 1 }, "waiter \(index) never queued")
        }
        return threads
    }

    func testLimiterGrantsInArrivalOrderWithOneWakeUpPerGrant() throws {
        let limiter = try Limiter(maxConcurrent: 1)
        XCTAssertTrue(limiter.tryAcquire())
        let order = Locked([Int]())
        let waiters = 16
        let threads = startInOrder(waiters, waiting: { limiter.stats().waiting }) { index in
            guard case .granted = limiter.acquire(timeoutNanoseconds: 30 * second) else { return }
            order.withLock { $0.append(index) }
            limiter.releaseSlot()
        }
        XCTAssertFalse(limiter.tryAcquire(), "no barging while threads wait")
        limiter.releaseSlot()
        for thread in threads { XCTAssertTrue(thread.join()) }
        XCTAssertEqual(order.current, Array(0..<waiters))
        let stats = limiter.stats()
        XCTAssertEqual(stats.counters.granted, UInt64(waiters + 1))
        XCTAssertEqual(stats.counters.wakeups, UInt64(waiters), "exactly one wake-up per waiting grant")
        XCTAssertEqual(stats.inFlight, 0)
    }

    func testManyThreadsOnFewSlotsWakeAtMostOncePerGrant() throws {
        let limiter = try Limiter(maxConcurrent: 4)
        let held = Locked((now: 0, most: 0))
        let threads = (0..<32).map { _ in
            TestThread {
                for _ in 0..<20 {
                    guard case .granted = limiter.acquire(timeoutNanoseconds: 30 * second) else { return }
                    held.withLock { $0.now += 1; $0.most = max($0.most, $0.now) }
                    held.withLock { $0.now -= 1 }
                    limiter.releaseSlot()
                }
            }
        }
        for thread in threads { XCTAssertTrue(thread.join(timeout: 60)) }
        let stats = limiter.stats()
        XCTAssertEqual(stats.counters.granted, 640)
        XCTAssertLessThanOrEqual(held.current.most, 4)
        XCTAssertLessThanOrEqual(stats.counters.wakeups, stats.counters.granted)
        XCTAssertEqual(stats.inFlight, 0)
        XCTAssertEqual(stats.waiting, 0)
    }

    func testTokenBucketServesWaitersFirstComeFirstServed() throws {
        let bucket = try TokenBucket(rate: 200, burst: 1)
        XCTAssertTrue(bucket.tryAcquire())
        try bucket.setRate(0.001)  // nobody is granted while the queue fills
        let order = Locked([Int]())
        let threads = startInOrder(8, waiting: { bucket.rateStats().waiting }) { index in
            guard case .granted = bucket.acquire(1, timeoutNanoseconds: 30 * second) else { return }
            order.withLock { $0.append(index) }
        }
        try bucket.setRate(200)
        for thread in threads { XCTAssertTrue(thread.join()) }
        XCTAssertEqual(order.current, Array(0..<8))
        let stats = bucket.rateStats()
        // Each grant: the head's own grant time, plus the promotion of the next head.
        XCTAssertLessThanOrEqual(stats.counters.wakeups, 2 * 8 + 1)
    }

    func testRateChangeWakesASleeperAtOnce() throws {
        let bucket = try TokenBucket(rate: 0.01, burst: 1)  // next token in 100 s
        XCTAssertTrue(bucket.tryAcquire())
        let result = Locked<RateAcquireOutcome?>(nil)
        let thread = TestThread {
            let outcome = bucket.acquire(1, timeoutNanoseconds: 60 * second)
            result.withLock { $0 = outcome }
        }
        XCTAssertTrue(eventually { bucket.rateStats().waiting == 1 })
        let start = monotonicSeconds()
        try bucket.setRate(1000)
        XCTAssertTrue(thread.join())
        XCTAssertLessThan(monotonicSeconds() - start, 10, "re-planned, not slept for 100 s")
        guard case .granted? = result.current else { return XCTFail("\(String(describing: result.current))") }
    }

    func testManualClockGrantsAndTimesOutWaitingThreads() throws {
        let clock = ManualClock()
        let bucket = try TokenBucket(rate: 1, burst: 1, clock: clock)
        XCTAssertTrue(bucket.tryAcquire())
        let first = Locked<RateAcquireOutcome?>(nil), second_ = Locked<RateAcquireOutcome?>(nil)
        let a = TestThread {
            let outcome = bucket.acquire(1, timeoutNanoseconds: -1)
            first.withLock { $0 = outcome }
        }
        XCTAssertTrue(eventually { bucket.rateStats().waiting == 1 })
        let b = TestThread {
            let outcome = bucket.acquire(1, timeoutNanoseconds: 1_500 * ms)
            second_.withLock { $0 = outcome }
        }
        XCTAssertTrue(eventually { bucket.rateStats().waiting == 2 })
        usleep(50_000)
        XCTAssertNil(first.current, "a manual clock that stands still grants nothing")
        try clock.advance(by: second)
        XCTAssertTrue(a.join())
        XCTAssertEqual(first.current, .granted(waitedNanoseconds: second), "waited on the clock")
        try clock.advance(by: 600 * ms)
        XCTAssertTrue(b.join(), "its timeout (on the manual clock) passed")
        XCTAssertEqual(second_.current, .timedOut)
        XCTAssertEqual(bucket.tokens, 0.6, accuracy: 1e-9, "a timed-out waiter takes nothing")
    }

    func testObserverCancelsAndPollsOnRealTimeOnAStillClock() throws {
        let clock = ManualClock()
        let bucket = try TokenBucket(rate: 1, burst: 2, clock: clock)
        XCTAssertTrue(bucket.tryAcquire(2))
        try clock.advance(by: 500 * ms)
        let log = HookLog()
        var observer = RecordingObserver(
            log: log, pollIntervalNanoseconds: 5 * ms, cancelOnPoll: 3,
            probe: { _ in _ = bucket.rateStats() })  // deadlocks if a hook ran under the lock
        let outcome = bucket.acquire(1, timeoutNanoseconds: -1, observer: &observer)
        XCTAssertEqual(outcome, .cancelled)
        XCTAssertEqual(log.events.current, ["willWait", "poll", "poll", "poll", "didWait"])
        XCTAssertEqual(log.violations.current, [])
        XCTAssertEqual(bucket.tokens, 0.5, accuracy: 1e-9, "a cancelled wait takes nothing")
        let stats = bucket.rateStats()
        XCTAssertEqual(stats.counters.cancelled, 1)
        XCTAssertEqual(stats.waiting, 0)
    }

    func testTimeoutOnTheSystemClock() throws {
        let window = try SlidingWindow(limit: 1, windowNanoseconds: 100 * second)
        XCTAssertTrue(window.tryAcquire())
        let start = monotonicSeconds()
        XCTAssertEqual(window.acquire(1, timeoutNanoseconds: 50 * ms), .timedOut)
        XCTAssertGreaterThanOrEqual(monotonicSeconds() - start, 0.049)
        XCTAssertEqual(window.rateStats().counters.timedOut, 1)
    }

    func testCancelledHeadPassesItsTurnOn() throws {
        let limiter = try Limiter(maxConcurrent: 1)
        XCTAssertTrue(limiter.tryAcquire())
        let cancel = Locked(false)
        struct FlagObserver: WaitObserver {
            let flag: Locked<Bool>
            var pollIntervalNanoseconds: Int64 { 2 * ms }
            mutating func willWait() {}
            mutating func shouldCancel() -> Bool { flag.current }
            mutating func didWait() {}
        }
        let headOutcome = Locked<RateAcquireOutcome?>(nil)
        let head = TestThread {
            var observer = FlagObserver(flag: cancel)
            let outcome = limiter.acquire(timeoutNanoseconds: -1, observer: &observer)
            headOutcome.withLock { $0 = outcome }
        }
        XCTAssertTrue(eventually { limiter.stats().waiting == 1 })
        let nextOutcome = Locked<RateAcquireOutcome?>(nil)
        let next = TestThread {
            let outcome = limiter.acquire(timeoutNanoseconds: 30 * second)
            nextOutcome.withLock { $0 = outcome }
        }
        XCTAssertTrue(eventually { limiter.stats().waiting == 2 })
        cancel.withLock { $0 = true }
        XCTAssertTrue(head.join())
        XCTAssertEqual(headOutcome.current, .cancelled)
        limiter.releaseSlot()
        XCTAssertTrue(next.join())
        guard case .granted? = nextOutcome.current else { return XCTFail("next was not granted") }
        XCTAssertEqual(limiter.inFlight, 1)
    }

    func testTicketNotifyRunsOutsideTheLock() throws {
        let limiter = try Limiter(maxConcurrent: 1)
        XCTAssertTrue(limiter.tryAcquire())
        let seen = Locked<Int?>(nil)
        let ticket = limiter.enqueue { seen.withLock { $0 = limiter.stats().waiting } }  // re-enters
        XCTAssertEqual(ticket.poll(), .waitForNotify)
        let releaser = TestThread { limiter.releaseSlot() }
        XCTAssertTrue(releaser.join(timeout: 10), "notify ran under the lock (deadlock)")
        XCTAssertEqual(seen.current, 1)
        XCTAssertEqual(ticket.poll(), .granted)
        ticket.release()
    }

    func testReadingStatsDoesNotWakeATimedHead() throws {
        let bucket = try TokenBucket(rate: 1, burst: 1)
        XCTAssertTrue(bucket.tryAcquire())
        let notified = Locked(0)
        let ticket = try XCTUnwrap(bucket.enqueue(1) { notified.withLock { $0 += 1 } })
        guard case .retryAfter = ticket.poll() else { return XCTFail("should wait about 1 s") }
        for _ in 0..<200 {
            _ = bucket.rateStats()
            _ = bucket.tokens
            XCTAssertFalse(bucket.tryAcquire())
        }
        XCTAssertEqual(notified.current, 0)
        XCTAssertEqual(bucket.rateStats().counters.wakeups, 0)
        ticket.release()
    }

    func testPacedWaitersWakeOncePerGrantOnAManualClock() throws {
        let clock = ManualClock()
        let bucket = try TokenBucket(rate: 100, burst: 1, clock: clock)
        XCTAssertTrue(bucket.tryAcquire())
        let order = Locked([Int]())
        let waiters = 8
        let threads = startInOrder(waiters, waiting: { bucket.rateStats().waiting }) { index in
            guard case .granted = bucket.acquire(1, timeoutNanoseconds: -1) else { return }
            order.withLock { $0.append(index) }
        }
        for step in 1...waiters {
            try clock.advance(by: 10 * ms)
            XCTAssertTrue(eventually { order.current.count == step }, "step \(step)")
            usleep(2_000)
            XCTAssertEqual(order.current.count, step, "one token, one grant")
        }
        for thread in threads { XCTAssertTrue(thread.join()) }
        XCTAssertEqual(order.current, Array(0..<waiters))
        let stats = bucket.rateStats()
        XCTAssertEqual(stats.counters.wakeups, UInt64(waiters),
                       "each waiter woken once, by the clock, at its turn: no promotion wake-up")
        XCTAssertEqual(stats.counters.waitNanoseconds, UInt64((1...waiters).reduce(0) { $0 + $1 }) * 10 * UInt64(ms))
    }

    func testPacedWaitersOnTheSystemClockStayInOrder() throws {
        let bucket = try TokenBucket(rate: 50, burst: 1)
        XCTAssertTrue(bucket.tryAcquire())
        let order = Locked([Int]())
        let waiters = 6
        let arrived = { let stats = bucket.rateStats(); return stats.waiting + Int(stats.counters.granted) - 1 }
        let threads = startInOrder(waiters, waiting: arrived) { index in
            guard case .granted = bucket.acquire(1, timeoutNanoseconds: 30 * second) else { return }
            order.withLock { $0.append(index) }
        }
        for thread in threads { XCTAssertTrue(thread.join()) }
        XCTAssertEqual(order.current, Array(0..<waiters))
        print("paced waiters on the system clock: \(bucket.rateStats().counters.wakeups) wake-ups for \(waiters) grants")
        // Usually exactly one per grant; a thread scheduled late costs its successor one more.
        XCTAssertLessThanOrEqual(bucket.rateStats().counters.wakeups, UInt64(2 * waiters))
    }
}

// Rate controllers on a manual clock, without threads: the issue's vectors, the queue's
// rules (no barging, FIFO, tickets), and argument checks.
import XCTest
@testable import BPStreamCore

private let ms: Int64 = 1_000_000
private let second: Int64 = 1_000_000_000

/// A notify that counts its calls.
private final class NotifyCount: @unchecked Sendable {
    let count = Locked(0)
    var value: Int { count.current }
    func callAsFunction() { count.withLock { $0 += 1 } }
}

final class ManualClockTests: XCTestCase {
    func testStartsAtZeroAndMovesOnlyForward() throws {
        let clock = ManualClock()
        XCTAssertEqual(clock.now(), 0)
        try clock.advance(by: 5)
        try clock.advance(seconds: 0.25)
        XCTAssertEqual(clock.now(), 250_000_005)
        XCTAssertThrowsError(try clock.advance(by: -1))
        XCTAssertThrowsError(try clock.advance(seconds: -0.1))
        XCTAssertThrowsError(try clock.advance(seconds: .nan))
        XCTAssertEqual(clock.now(), 250_000_005)
    }
}

final class TokenBucketTests: XCTestCase {
    func testTenImmediateThenOnePerTenMilliseconds() throws {
        let clock = ManualClock()
        let bucket = try TokenBucket(rate: 100, burst: 10, clock: clock)
        for _ in 0..<10 { XCTAssertTrue(bucket.tryAcquire(1)) }
        XCTAssertFalse(bucket.tryAcquire(1))
        XCTAssertEqual(bucket.retryAfterNanoseconds(1), 10 * ms)
        for _ in 0..<5 {
            try clock.advance(by: 9 * ms)
            XCTAssertFalse(bucket.tryAcquire(1))
            try clock.advance(by: 1 * ms)
            XCTAssertTrue(bucket.tryAcquire(1))
            XCTAssertFalse(bucket.tryAcquire(1))
        }
        let stats = bucket.rateStats()
        XCTAssertEqual(stats.counters.granted, 15)
        XCTAssertEqual(stats.counters.refused, 11)
    }

    func testTokensNeverExceedBurstAfterIdling() throws {
        let clock = ManualClock()
        let bucket = try TokenBucket(rate: 100, burst: 10, startFull: false, clock: clock)
        XCTAssertEqual(bucket.tokens, 0)
        XCTAssertFalse(bucket.tryAcquire())
        try clock.advance(seconds: 60)
        XCTAssertEqual(bucket.tokens, 10)
        XCTAssertTrue(bucket.tryAcquire(10))
        XCTAssertFalse(bucket.tryAcquire(1))
    }

    func testRefusalTakesNothingAndImpossibleIsTold() throws {
        let clock = ManualClock()
        let bucket = try TokenBucket(rate: 100, burst: 10, clock: clock)
        XCTAssertTrue(bucket.tryAcquire(7))
        XCTAssertFalse(bucket.tryAcquire(4))
        XCTAssertEqual(bucket.tokens, 3)
        XCTAssertEqual(bucket.attempt(11), .impossible)
        XCTAssertNil(bucket.retryAfterNanoseconds(11))
        XCTAssertEqual(bucket.attempt(0), .impossible)
        XCTAssertEqual(bucket.acquire(11), .impossible)
        XCTAssertEqual(bucket.retryAfterNanoseconds(4), 10 * ms)
    }

    func testBadArguments() {
        XCTAssertThrowsError(try TokenBucket(rate: 0, burst: 1))
        XCTAssertThrowsError(try TokenBucket(rate: -1, burst: 1))
        XCTAssertThrowsError(try TokenBucket(rate: .infinity, burst: 1))
        XCTAssertThrowsError(try TokenBucket(rate: 1, burst: 0))
    }

    func testSetRateAndBurst() throws {
        let clock = ManualClock()
        let bucket = try TokenBucket(rate: 100, burst: 10, clock: clock)
        XCTAssertTrue(bucket.tryAcquire(10))
        try bucket.setRate(1000)
        XCTAssertEqual(bucket.currentRate, 1000)
        XCTAssertEqual(bucket.retryAfterNanoseconds(1), 1 * ms)
        try clock.advance(by: 1 * second)
        try bucket.setLimit(4)
        XCTAssertEqual(bucket.tokens, 4)
        XCTAssertThrowsError(try bucket.setLimit(2.5))
        XCTAssertThrowsError(try bucket.setRate(0))
    }

    func testTicketsAreFifoAndNobodyBarges() throws {
        let clock = ManualClock()
        let bucket = try TokenBucket(rate: 100, burst: 1, clock: clock)
        XCTAssertTrue(bucket.tryAcquire())
        let first = NotifyCount(), second = NotifyCount()
        let a = try XCTUnwrap(bucket.enqueue(1) { first() })
        let b = try XCTUnwrap(bucket.enqueue(1) { second() })
        XCTAssertEqual(a.poll(), .retryAfter(10 * ms))
        XCTAssertEqual(b.poll(), .waitForNotify)
        try clock.advance(by: 10 * ms)
        XCTAssertEqual(first.value, 1, "the head is notified when the clock makes it due")
        XCTAssertEqual(second.value, 0, "no herd: the second is not the head")
        XCTAssertFalse(bucket.tryAcquire(), "no barging while tickets wait")
        XCTAssertEqual(b.poll(), .waitForNotify, "only the head may take")
        XCTAssertEqual(a.poll(), .granted)
        XCTAssertEqual(a.poll(), .granted, "a granted ticket stays granted")
        XCTAssertEqual(second.value, 1, "the promoted head is notified once")
        XCTAssertEqual(b.poll(), .retryAfter(10 * ms))
        a.release()
        b.release()  // leaves ungranted: takes nothing
        XCTAssertEqual(bucket.rateStats().counters.cancelled, 1)
        XCTAssertEqual(bucket.rateStats().waiting, 0)
        try clock.advance(by: 10 * ms)
        XCTAssertTrue(bucket.tryAcquire(), "b's release took nothing")
    }

    func testRateChangeReplansHeadTicketAtOnce() throws {
        let clock = ManualClock()
        let bucket = try TokenBucket(rate: 1, burst: 1, clock: clock)
        XCTAssertTrue(bucket.tryAcquire())
        let notified = NotifyCount()
        let ticket = try XCTUnwrap(bucket.enqueue(1) { notified() })
        XCTAssertEqual(ticket.poll(), .retryAfter(second))
        try bucket.setRate(1000)
        XCTAssertEqual(notified.value, 1, "a faster rate re-plans the head at once")
        XCTAssertEqual(ticket.poll(), .retryAfter(ms))
        try bucket.setRate(1)
        XCTAssertEqual(notified.value, 1, "a slower rate needs no wake-up (it looks again on time)")
        ticket.release(timedOut: true)
        XCTAssertEqual(bucket.rateStats().counters.timedOut, 1)
    }

    func testLoweredBurstMakesWaitingTicketImpossible() throws {
        let clock = ManualClock()
        let bucket = try TokenBucket(rate: 1, burst: 5, startFull: false, clock: clock)
        let notified = NotifyCount()
        let ticket = try XCTUnwrap(bucket.enqueue(5) { notified() })
        XCTAssertEqual(ticket.poll(), .retryAfter(5 * second))
        try bucket.setLimit(2)
        XCTAssertEqual(notified.value, 1)
        XCTAssertEqual(ticket.poll(), .impossible)
        ticket.release()
        XCTAssertNil(bucket.enqueue(3) {})
    }

    func testManualClockTimeoutOfAThreadlessAcquireIsImmediate() throws {
        let clock = ManualClock()
        let bucket = try TokenBucket(rate: 1, burst: 1, clock: clock)
        XCTAssertTrue(bucket.tryAcquire())
        XCTAssertEqual(bucket.acquire(1, timeoutNanoseconds: 0), .timedOut)
        XCTAssertEqual(bucket.rateStats().counters.timedOut, 1)
        XCTAssertEqual(bucket.rateStats().counters.refused, 0, "acquire's first look is no refusal")
    }
}

final class SlidingWindowTests: XCTestCase {
    func testExactLogVector() throws {
        let clock = ManualClock()
        let window = try SlidingWindow(limit: 5, windowNanoseconds: second, clock: clock)
        for i in 0..<5 {
            XCTAssertTrue(window.tryAcquire(), "hit at 0.\(i)")
            try clock.advance(by: 100 * ms)
        }
        XCTAssertEqual(clock.now(), 500 * ms)
        XCTAssertFalse(window.tryAcquire())
        XCTAssertEqual(window.retryAfterNanoseconds(), 500 * ms)
        try clock.advance(by: 499 * ms)
        XCTAssertFalse(window.tryAcquire(), "refusals are not logged, and 0.0 is still inside")
        try clock.advance(by: 1 * ms)
        XCTAssertTrue(window.tryAcquire(), "at 1.0 the hit of 0.0 has left the window")
        XCTAssertFalse(window.tryAcquire())
        XCTAssertEqual(window.retryAfterNanoseconds(), 100 * ms)
        XCTAssertEqual(window.currentRate, 5)
        XCTAssertEqual(window.rateStats().counters.refused, 3)
    }

    func testImpossibleAndMultiplePermits() throws {
        let clock = ManualClock()
        let window = try SlidingWindow(limit: 5, windowNanoseconds: second, clock: clock)
        XCTAssertEqual(window.attempt(6), .impossible)
        XCTAssertEqual(window.acquire(6), .impossible)
        XCTAssertTrue(window.tryAcquire(3))
        try clock.advance(by: 200 * ms)
        XCTAssertFalse(window.tryAcquire(3))
        XCTAssertEqual(window.retryAfterNanoseconds(3), 800 * ms, "the 3 of t=0 leave at 1.0")
        XCTAssertTrue(window.tryAcquire(2))
        XCTAssertThrowsError(try SlidingWindow(limit: 0, windowNanoseconds: second))
        XCTAssertThrowsError(try SlidingWindow(limit: 1, windowNanoseconds: 0))
    }

    func testSettableLimitAndRate() throws {
        let clock = ManualClock()
        let window = try SlidingWindow(limit: 2, windowNanoseconds: second, clock: clock)
        XCTAssertTrue(window.tryAcquire(2))
        let notified = NotifyCount()
        let ticket = try XCTUnwrap(window.enqueue(1) { notified() })
        XCTAssertEqual(ticket.poll(), .retryAfter(second))
        try window.setRate(3)  // limit = 3 per 1 s
        XCTAssertEqual(window.limit, 3)
        XCTAssertEqual(notified.value, 1, "a raised limit grants the waiting head at once")
        XCTAssertEqual(ticket.poll(), .granted)
        ticket.release()
        XCTAssertThrowsError(try window.setRate(0.2), "round(0.2 * 1 s) = 0")
    }
}

final class AIMDTests: XCTestCase {
    func testIssueVectors() throws {
        let clock = ManualClock()
        let aimd = try AIMD(initial: 100, clock: clock)
        aimd.recordBackpressure()
        XCTAssertEqual(aimd.limit, 50, "one event halves")
        try clock.advance(by: 500 * ms)
        aimd.recordBackpressure()
        XCTAssertEqual(aimd.limit, 50, "two events in one window: 50, not 25")
        for _ in 0..<10 {
            try clock.advance(by: second)
            aimd.recordSuccess()
        }
        try clock.advance(by: second)
        XCTAssertEqual(aimd.limit, 60, "ten used windows later")
        let stats = aimd.rateStats()
        XCTAssertEqual(stats.increases, 10)
        XCTAssertEqual(stats.decreases, 1)
        XCTAssertEqual(aimd.currentRate, 60)
    }

    func testIdleWindowsAndBackpressureWindowsDoNotGrow() throws {
        let clock = ManualClock()
        let aimd = try AIMD(initial: 10, clock: clock)
        try clock.advance(by: 5 * second)
        XCTAssertEqual(aimd.limit, 10, "idle windows change nothing")
        aimd.recordSuccess()
        aimd.recordSuccess()
        try clock.advance(by: second)
        XCTAssertEqual(aimd.limit, 11, "one increase per window, however many successes")
        aimd.recordSuccess()
        try clock.advance(by: 1_100 * ms)
        aimd.recordBackpressure()
        XCTAssertEqual(aimd.limit, 6, "12 * 0.5 (the window with the success closed first)")
        aimd.recordSuccess()
        try clock.advance(by: second)
        XCTAssertEqual(aimd.limit, 6, "a window with a backpressure event does not grow")
    }

    func testClampedAndCooldown() throws {
        let clock = ManualClock()
        let aimd = try AIMD(initial: 4, minimum: 3, maximum: 4.5, increase: 1, decrease: 0.5,
                            cooldownNanoseconds: 0, clock: clock)
        aimd.recordBackpressure()
        XCTAssertEqual(aimd.limit, 3, "never below minimum")
        for _ in 0..<3 {
            try clock.advance(by: second)
            aimd.recordSuccess()
        }
        try clock.advance(by: second)
        XCTAssertEqual(aimd.limit, 4.5, "never above maximum (3 -> 4 -> 4.5 -> 4.5)")
        XCTAssertEqual(aimd.rateStats().increases, 2)
        try aimd.setLimit(100)
        XCTAssertEqual(aimd.limit, 4.5)
        let noCooldown = try AIMD(initial: 100, cooldownNanoseconds: 0, clock: clock)
        noCooldown.recordBackpressure()
        noCooldown.recordBackpressure()
        XCTAssertEqual(noCooldown.limit, 25)
    }

    func testBadParameters() {
        XCTAssertThrowsError(try AIMD(initial: 10, decrease: 0))
        XCTAssertThrowsError(try AIMD(initial: 10, decrease: 1))
        XCTAssertThrowsError(try AIMD(initial: 10, decrease: 1.5))
        XCTAssertThrowsError(try AIMD(initial: 10, increase: 0))
        XCTAssertThrowsError(try AIMD(initial: 10, increase: -1))
        XCTAssertThrowsError(try AIMD(initial: 10, minimum: 20, maximum: 5))
        XCTAssertThrowsError(try AIMD(initial: 50, minimum: 1, maximum: 10))
        XCTAssertThrowsError(try AIMD(initial: 0.5))
        XCTAssertNoThrow(try AIMD(initial: 10))
    }

    func testPacesAtTheLimit() throws {
        let clock = ManualClock()
        let aimd = try AIMD(initial: 100, clock: clock)
        XCTAssertTrue(aimd.tryAcquire(), "burst 1: one at once")
        XCTAssertFalse(aimd.tryAcquire())
        XCTAssertEqual(aimd.retryAfterNanoseconds(), 10 * ms)
        aimd.recordBackpressure()
        XCTAssertEqual(aimd.retryAfterNanoseconds(), 20 * ms, "the pace follows the limit")
        XCTAssertEqual(aimd.attempt(2), .impossible)
    }
}

/// The queue as a pure value: when a promoted head is planned.
final class AdmissionQueuePlanningTests: XCTestCase {
    func testAPromotedHeadIsPlannedAtPromotion() {
        var queue = AdmissionQueue(policy: TokenBucketPermits(rate: 100, burst: 1, startFull: false, now: 0))
        let a = queue.enqueue(1, now: 0)
        let b = queue.enqueue(1, now: 0)
        XCTAssertEqual(queue.attempt(a, now: 0), .due(at: 10 * ms))
        XCTAssertEqual(queue.attempt(b, now: 0), .behind(until: nil))
        XCTAssertEqual(queue.attempt(a, now: 10 * ms), .granted(waited: 10 * ms))
        XCTAssertEqual(queue.wakeList(now: 10 * ms), [b], "promoted, due at 20 ms")
        // b first looks long after: its grant is dated 20 ms, as if it had run at once.
        XCTAssertEqual(queue.attempt(b, now: 510 * ms), .granted(waited: 510 * ms))
        XCTAssertEqual(queue.policy.tokens(now: 510 * ms), 1, accuracy: 1e-9)
    }

    func testRetryAfterCountsTheWaitersAhead() {
        var queue = AdmissionQueue(policy: TokenBucketPermits(rate: 100, burst: 2, startFull: false, now: 0))
        XCTAssertEqual(queue.retryAfter(1, now: 0), 10 * ms)
        _ = queue.enqueue(2, now: 0)
        XCTAssertEqual(queue.retryAfter(1, now: 0), 30 * ms)
        var window = AdmissionQueue(policy: SlidingWindowPermits(limit: 1, window: second))
        XCTAssertEqual(window.tryAcquire(1, now: 0), .granted)
        _ = window.enqueue(1, now: 0)
        XCTAssertEqual(window.retryAfter(1, now: 0), 2 * second, "the waiter's grant at 1 s must leave first")
    }
}

/// The window's log keeps one entry per grant, not per permit: a limit of 2^31 permits
/// granted at once must not allocate 2^31 timestamps (it aborted the process: 16 GiB).
final class SlidingWindowLogTests: XCTestCase {
    func testAHugeGrantCostsOneEntryAndStaysExact() {
        let limit = RateLimits.maximumPermits
        var policy = SlidingWindowPermits(limit: limit, window: second)
        XCTAssertEqual(policy.delay(for: limit, now: 0), 0)
        policy.take(limit, now: 0)
        XCTAssertEqual(policy.used(now: 0), limit)
        XCTAssertEqual(policy.delay(for: 1, now: 0), second)
        XCTAssertEqual(policy.used(now: second), 0)
        XCTAssertEqual(policy.delay(for: limit, now: second), 0)
    }

    func testMixedGrantsLeaveInOrder() {
        // limit 5 per 1 s: 2 at 0.0, 1 at 0.1 (twice: merged), 1 at 0.3.
        var policy = SlidingWindowPermits(limit: 5, window: second)
        policy.take(2, now: 0)
        policy.take(1, now: 100 * ms)
        policy.take(1, now: 100 * ms)
        XCTAssertEqual(policy.used(now: 200 * ms), 4)
        XCTAssertEqual(policy.delay(for: 1, now: 200 * ms), 0)
        policy.take(1, now: 300 * ms)
        XCTAssertEqual(policy.delay(for: 1, now: 400 * ms), 600 * ms, "the oldest (0.0) leaves at 1.0")
        XCTAssertEqual(policy.delay(for: 2, now: 400 * ms), 600 * ms, "both at 0.0 leave at 1.0")
        XCTAssertEqual(policy.delay(for: 3, now: 400 * ms), 700 * ms, "then the first at 0.1")
        XCTAssertEqual(policy.delay(for: 4, now: 400 * ms), 700 * ms, "and the second at 0.1")
        XCTAssertEqual(policy.delay(for: 5, now: 400 * ms), 900 * ms, "and the one at 0.3")
        XCTAssertEqual(policy.used(now: second), 3)
        XCTAssertEqual(policy.used(now: second + 100 * ms), 1)
        XCTAssertEqual(policy.used(now: second + 300 * ms), 0)
    }

    func testTheLogIsCompactedAsGrantsLeave() {
        var policy = SlidingWindowPermits(limit: 3, window: second)
        for i in 0..<10_000 {
            let now = Int64(i) * second / 2
            XCTAssertEqual(policy.delay(for: 1, now: now), 0)
            policy.take(1, now: now)
        }
        XCTAssertLessThanOrEqual(policy.entryCount, 200)
        XCTAssertEqual(policy.used(now: 5_000 * second - second / 2), 2, "4999.0 and 4999.5 s")
    }
}

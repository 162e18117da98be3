// The limiter without threads (manual clock): atomic admission, no barging, tickets,
// limits changed while tickets wait.
import XCTest
@testable import BPStreamCore

private let ms: Int64 = 1_000_000
private let second: Int64 = 1_000_000_000

final class LimiterTests: XCTestCase {
    func testRefusalBySlotsLeavesTokensUntouched() throws {
        let clock = ManualClock()
        let limiter = try Limiter(maxConcurrent: 1, rate: 1, burst: 5, clock: clock)
        XCTAssertTrue(limiter.tryAcquire())
        for _ in 0..<3 { XCTAssertFalse(limiter.tryAcquire()) }
        XCTAssertEqual(limiter.stats().tokens, 4)
        XCTAssertEqual(limiter.stats().counters.refused, 3)
        XCTAssertNil(limiter.retryAfterNanoseconds(), "only a released slot can admit")
        XCTAssertTrue(limiter.releaseSlot())
        XCTAssertTrue(limiter.tryAcquire())
        XCTAssertEqual(limiter.stats().tokens, 3)
    }

    func testRefusalByRateLeavesSlotsUntouched() throws {
        let clock = ManualClock()
        let limiter = try Limiter(maxConcurrent: 3, rate: 10, clock: clock)
        XCTAssertTrue(limiter.tryAcquire())
        XCTAssertFalse(limiter.tryAcquire(), "burst defaults to 1")
        XCTAssertEqual(limiter.inFlight, 1)
        XCTAssertEqual(limiter.retryAfterNanoseconds(), 100 * ms)
        try clock.advance(by: 100 * ms)
        XCTAssertTrue(limiter.tryAcquire())
        XCTAssertEqual(limiter.inFlight, 2)
        XCTAssertEqual(limiter.stats().utilization, 2.0 / 3.0, accuracy: 1e-12)
    }

    func testReleaseWithoutSlotIsAnErrorState() throws {
        let limiter = try Limiter(maxConcurrent: 2)
        XCTAssertFalse(limiter.releaseSlot())
        XCTAssertTrue(limiter.tryAcquire())
        XCTAssertTrue(limiter.releaseSlot())
        XCTAssertFalse(limiter.releaseSlot())
        XCTAssertEqual(limiter.stats().released, 1)
    }

    func testNeedsALimitAndValidValues() {
        XCTAssertThrowsError(try Limiter())
        XCTAssertThrowsError(try Limiter(maxConcurrent: 0))
        XCTAssertThrowsError(try Limiter(rate: 0))
        XCTAssertThrowsError(try Limiter(rate: 1, burst: 0))
        XCTAssertThrowsError(try Limiter(maxConcurrent: 1, burst: 3), "a burst needs a rate")
    }

    func testNoBargingWhenASlotFreesAndOneNotifyPerSlot() throws {
        let limiter = try Limiter(maxConcurrent: 1)
        XCTAssertTrue(limiter.tryAcquire())
        let notes = Locked([Int]())
        let tickets = (0..<3).map { index in limiter.enqueue { notes.withLock { $0.append(index) } } }
        for ticket in tickets { XCTAssertEqual(ticket.poll(), .waitForNotify) }
        limiter.releaseSlot()
        XCTAssertEqual(notes.current, [0], "a released slot wakes exactly the head")
        XCTAssertFalse(limiter.tryAcquire(), "no barging at the instant a slot frees")
        XCTAssertEqual(tickets[1].poll(), .waitForNotify)
        XCTAssertEqual(tickets[0].poll(), .granted)
        XCTAssertEqual(notes.current, [0], "the next head waits for a slot: not woken")
        limiter.releaseSlot()
        XCTAssertEqual(notes.current, [0, 1])
        tickets[1].release()  // cancelled after its wake-up: takes nothing, passes it on
        XCTAssertEqual(notes.current, [0, 1, 2])
        XCTAssertEqual(tickets[2].poll(), .granted)
        for ticket in tickets { ticket.release() }
        let stats = limiter.stats()
        XCTAssertEqual(stats.counters.granted, 3)
        XCTAssertEqual(stats.counters.cancelled, 1)
        XCTAssertEqual(stats.inFlight, 1)
        XCTAssertEqual(stats.waiting, 0)
    }

    func testRaisingLimitsAdmitsWaitersAtOnce() throws {
        let clock = ManualClock()
        let limiter = try Limiter(maxConcurrent: 1, rate: 1, burst: 1, clock: clock)
        XCTAssertTrue(limiter.tryAcquire())
        let notified = Locked(0)
        let ticket = limiter.enqueue { notified.withLock { $0 += 1 } }
        XCTAssertEqual(ticket.poll(), .waitForNotify)
        try limiter.setMaxConcurrent(2)
        XCTAssertEqual(notified.current, 1, "a slot appeared: the head looks again")
        XCTAssertEqual(ticket.poll(), .retryAfter(second), "now the rate holds it")
        try limiter.setRate(1000, burst: 1)
        XCTAssertEqual(notified.current, 2)
        XCTAssertEqual(ticket.poll(), .retryAfter(ms))
        try clock.advance(by: ms)
        XCTAssertEqual(notified.current, 3)
        XCTAssertEqual(ticket.poll(), .granted)
        ticket.release()
        XCTAssertEqual(limiter.inFlight, 2)
        try limiter.setMaxConcurrent(nil)
        XCTAssertEqual(limiter.maxConcurrent, nil)
        XCTAssertThrowsError(try limiter.setRate(nil), "no limit left")
    }
}

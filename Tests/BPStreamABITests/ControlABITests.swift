// Clocks, rate controllers, tickets and the limiter through bpstream.h, the way C calls
// them: statuses, out-parameters written only on BPS_OK, C-convention callbacks that
// reach their state through a context pointer.
import CBPStream
import Foundation
import XCTest

private let ms: Int64 = 1_000_000
private let second: Int64 = 1_000_000_000

/// Counts a ticket's notifications and its context release (the context of the callbacks).
private final class TicketProbe {
    var notified = 0
    var events: UInt32 = 0
    var released = 0
}

private let probeNotify: bps_notify_fn = { context, events in
    let probe = Unmanaged<TicketProbe>.fromOpaque(context!).takeUnretainedValue()
    probe.notified += 1
    probe.events = events
}

private let probeRelease: bps_context_release_fn = { context in
    Unmanaged<TicketProbe>.fromOpaque(context!).takeUnretainedValue().released += 1
}

private func manualClock() throws -> OpaquePointer {
    var clock: OpaquePointer?
    XCTAssertEqual(bps_clock_create_manual(&clock), BPS_OK)
    return try XCTUnwrap(clock)
}

private func bucketConfig(rate: Double, burst: Int64, clock: OpaquePointer?) -> bps_rate_config {
    var config = bps_rate_config()
    config.size = MemoryLayout<bps_rate_config>.size
    config.kind = BPS_RATE_TOKEN_BUCKET
    config.clock = clock
    config.rate = rate
    config.burst = burst
    config.start_full = 1
    return config
}

private func makeRate(_ config: bps_rate_config) throws -> OpaquePointer {
    var config = config
    var rate: OpaquePointer?
    XCTAssertEqual(bps_rate_create(&config, &rate), BPS_OK)
    return try XCTUnwrap(rate)
}

private func rateStats(_ rate: OpaquePointer) -> bps_rate_stats {
    var stats = bps_rate_stats()
    stats.size = MemoryLayout<bps_rate_stats>.size
    XCTAssertEqual(bps_rate_get_stats(rate, &stats), BPS_OK)
    return stats
}

private func limiterStats(_ limiter: OpaquePointer) -> bps_limiter_stats {
    var stats = bps_limiter_stats()
    stats.size = MemoryLayout<bps_limiter_stats>.size
    XCTAssertEqual(bps_limiter_get_stats(limiter, &stats), BPS_OK)
    return stats
}

final class ControlABITests: XCTestCase {
    func testClock() throws {
        let clock = try manualClock()
        defer { bps_clock_release(clock) }
        var now: Int64 = -1
        XCTAssertEqual(bps_clock_now(clock, &now), BPS_OK)
        XCTAssertEqual(now, 0)
        XCTAssertEqual(bps_clock_advance(clock, 42), BPS_OK)
        XCTAssertEqual(bps_clock_advance(clock, -1), BPS_INVALID_ARGUMENT)
        XCTAssertEqual(bps_clock_now(clock, &now), BPS_OK)
        XCTAssertEqual(now, 42)
        XCTAssertEqual(bps_clock_now(nil, &now), BPS_OK)
        XCTAssertGreaterThan(now, 0, "NULL is the monotonic clock")
        XCTAssertEqual(bps_clock_retain(clock), BPS_OK)
        XCTAssertEqual(bps_clock_release(clock), BPS_OK)
        XCTAssertEqual(bps_clock_now(clock, nil), BPS_INVALID_ARGUMENT)
    }

    func testTokenBucketVector() throws {
        let clock = try manualClock()
        let rate = try makeRate(bucketConfig(rate: 100, burst: 10, clock: clock))
        bps_clock_release(clock)  // the rate keeps its own reference
        defer { bps_rate_release(rate) }
        for _ in 0..<10 { XCTAssertEqual(bps_rate_try_acquire(rate, 1), BPS_OK) }
        XCTAssertEqual(bps_rate_try_acquire(rate, 1), BPS_FULL)
        var retry: Int64 = -1
        XCTAssertEqual(bps_rate_retry_after(rate, 1, &retry), BPS_OK)
        XCTAssertEqual(retry, 10 * ms)
        XCTAssertEqual(bps_rate_try_acquire(rate, 11), BPS_INVALID_ARGUMENT)
        XCTAssertEqual(bps_rate_try_acquire(rate, 0), BPS_INVALID_ARGUMENT)
        retry = -7
        XCTAssertEqual(bps_rate_retry_after(rate, 11, &retry), BPS_INVALID_ARGUMENT)
        XCTAssertEqual(retry, -7, "out-parameters are written only on BPS_OK")
        var waited: Int64 = -7
        XCTAssertEqual(bps_rate_acquire(rate, 11, -1, nil, &waited), BPS_INVALID_ARGUMENT)
        XCTAssertEqual(bps_rate_acquire(rate, 1, 0, nil, &waited), BPS_TIMED_OUT)
        XCTAssertEqual(waited, -7)
        var c: OpaquePointer?
        XCTAssertEqual(bps_rate_create(nil, &c), BPS_INVALID_ARGUMENT)
        let stats = rateStats(rate)
        XCTAssertEqual(stats.kind, BPS_RATE_TOKEN_BUCKET)
        XCTAssertEqual(stats.granted, 10)
        XCTAssertEqual(stats.refused, 1)
        XCTAssertEqual(stats.timed_out, 1)
        XCTAssertEqual(stats.rate, 100)
        XCTAssertEqual(stats.limit, 10)
        XCTAssertEqual(stats.tokens, 0)
    }

    func testBadConfigs() {
        var rate: OpaquePointer?
        var config = bucketConfig(rate: 0, burst: 1, clock: nil)
        XCTAssertEqual(bps_rate_create(&config, &rate), BPS_INVALID_ARGUMENT)
        config = bucketConfig(rate: 1, burst: 0, clock: nil)
        XCTAssertEqual(bps_rate_create(&config, &rate), BPS_INVALID_ARGUMENT)
        config = bucketConfig(rate: 1, burst: 1, clock: nil)
        config.size = 8
        XCTAssertEqual(bps_rate_create(&config, &rate), BPS_INVALID_ARGUMENT)
        config = bucketConfig(rate: 1, burst: 1, clock: nil)
        config.kind = bps_rate_kind(rawValue: 9)
        XCTAssertEqual(bps_rate_create(&config, &rate), BPS_INVALID_ARGUMENT)
        var aimd = bps_rate_config()
        aimd.size = MemoryLayout<bps_rate_config>.size
        aimd.kind = BPS_RATE_AIMD
        aimd.initial = 100; aimd.minimum = 1; aimd.maximum = .infinity
        aimd.increase = 1; aimd.decrease = 1; aimd.window_ns = second; aimd.cooldown_ns = -1
        XCTAssertEqual(bps_rate_create(&aimd, &rate), BPS_INVALID_ARGUMENT, "decrease 1")
        aimd.decrease = 0.5; aimd.increase = 0
        XCTAssertEqual(bps_rate_create(&aimd, &rate), BPS_INVALID_ARGUMENT, "increase 0")
        aimd.increase = 1; aimd.minimum = 200
        XCTAssertEqual(bps_rate_create(&aimd, &rate), BPS_INVALID_ARGUMENT, "initial below minimum")
        XCTAssertNil(rate)
        var limiter: OpaquePointer?
        var none = bps_limiter_config()
        none.size = MemoryLayout<bps_limiter_config>.size
        none.max_concurrent = BPS_LIMIT_NONE
        XCTAssertEqual(bps_limiter_create(&none, &limiter), BPS_INVALID_ARGUMENT, "no limit")
        XCTAssertNil(limiter)
    }

    func testSlidingWindowAndAIMD() throws {
        let clock = try manualClock()
        defer { bps_clock_release(clock) }
        var window = bps_rate_config()
        window.size = MemoryLayout<bps_rate_config>.size
        window.kind = BPS_RATE_SLIDING_WINDOW
        window.clock = clock
        window.limit = 5
        window.window_ns = second
        let sliding = try makeRate(window)
        defer { bps_rate_release(sliding) }
        for _ in 0..<5 {
            XCTAssertEqual(bps_rate_try_acquire(sliding, 1), BPS_OK)
            XCTAssertEqual(bps_clock_advance(clock, 100 * ms), BPS_OK)
        }
        XCTAssertEqual(bps_rate_try_acquire(sliding, 1), BPS_FULL)
        var retry: Int64 = 0
        XCTAssertEqual(bps_rate_retry_after(sliding, 1, &retry), BPS_OK)
        XCTAssertEqual(retry, 500 * ms)
        XCTAssertEqual(bps_clock_advance(clock, 500 * ms), BPS_OK)
        XCTAssertEqual(bps_rate_try_acquire(sliding, 1), BPS_OK)
        var value = 0.0
        XCTAssertEqual(bps_rate_get_rate(sliding, &value), BPS_OK)
        XCTAssertEqual(value, 5)

        var aimdConfig = bps_rate_config()
        aimdConfig.size = MemoryLayout<bps_rate_config>.size
        aimdConfig.kind = BPS_RATE_AIMD
        aimdConfig.clock = clock
        aimdConfig.initial = 100; aimdConfig.minimum = 1; aimdConfig.maximum = .infinity
        aimdConfig.increase = 1; aimdConfig.decrease = 0.5; aimdConfig.window_ns = second
        aimdConfig.cooldown_ns = -1
        let aimd = try makeRate(aimdConfig)
        defer { bps_rate_release(aimd) }
        XCTAssertEqual(bps_rate_on_backpressure(aimd), BPS_OK)
        XCTAssertEqual(bps_rate_on_backpressure(aimd), BPS_OK)
        XCTAssertEqual(bps_rate_get_limit(aimd, &value), BPS_OK)
        XCTAssertEqual(value, 50)
        for _ in 0..<10 {
            XCTAssertEqual(bps_clock_advance(clock, second), BPS_OK)
            XCTAssertEqual(bps_rate_on_success(aimd), BPS_OK)
        }
        XCTAssertEqual(bps_clock_advance(clock, second), BPS_OK)
        XCTAssertEqual(bps_rate_get_rate(aimd, &value), BPS_OK)
        XCTAssertEqual(value, 60)
        let stats = rateStats(aimd)
        XCTAssertEqual(stats.increases, 10)
        XCTAssertEqual(stats.decreases, 1)
        XCTAssertEqual(bps_rate_set_limit(aimd, 7), BPS_OK)
        XCTAssertEqual(bps_rate_get_rate(aimd, &value), BPS_OK)
        XCTAssertEqual(value, 7)
    }

    func testTicketsNotifyAndReleaseTheirContextOnce() throws {
        let clock = try manualClock()
        defer { bps_clock_release(clock) }
        let rate = try makeRate(bucketConfig(rate: 100, burst: 1, clock: clock))
        defer { bps_rate_release(rate) }
        XCTAssertEqual(bps_rate_try_acquire(rate, 1), BPS_OK)
        let first = TicketProbe(), second_ = TicketProbe()
        var a: OpaquePointer?, b: OpaquePointer?
        XCTAssertEqual(bps_rate_enqueue(rate, 1, probeNotify, probeRelease,
                                        Unmanaged.passUnretained(first).toOpaque(), &a), BPS_OK)
        XCTAssertEqual(bps_rate_enqueue(rate, 1, probeNotify, probeRelease,
                                        Unmanaged.passUnretained(second_).toOpaque(), &b), BPS_OK)
        var x: OpaquePointer?
        XCTAssertEqual(bps_rate_enqueue(rate, 2, probeNotify, nil, nil, &x), BPS_INVALID_ARGUMENT)
        XCTAssertEqual(bps_rate_enqueue(rate, 1, nil, nil, nil, &x), BPS_INVALID_ARGUMENT)
        var retry: Int64 = 0
        XCTAssertEqual(bps_ticket_poll(a, &retry), BPS_OK)
        XCTAssertEqual(retry, 10 * ms)
        XCTAssertEqual(bps_ticket_poll(b, &retry), BPS_OK)
        XCTAssertEqual(retry, -1)
        XCTAssertEqual(bps_rate_try_acquire(rate, 1), BPS_FULL, "no barging")
        XCTAssertEqual(bps_clock_advance(clock, 10 * ms), BPS_OK)
        XCTAssertEqual(first.notified, 1)
        XCTAssertEqual(first.events, BPS_TICKET_WAKE)
        XCTAssertEqual(second_.notified, 0)
        XCTAssertEqual(bps_ticket_poll(a, &retry), BPS_OK)
        XCTAssertEqual(retry, 0, "granted")
        XCTAssertEqual(second_.notified, 1, "the promoted head")
        XCTAssertEqual(first.released, 0, "the context lives until the ticket is released")
        XCTAssertEqual(bps_ticket_release(a, 0), BPS_OK)
        XCTAssertEqual(first.released, 1)
        XCTAssertEqual(bps_ticket_release(b, 1), BPS_OK)
        XCTAssertEqual(second_.released, 1)
        let stats = rateStats(rate)
        XCTAssertEqual(stats.granted, 2)
        XCTAssertEqual(stats.timed_out, 1)
        XCTAssertEqual(stats.waiting, 0)
    }

    func testAcquireCancelledByTheWaitHookTakesNothing() throws {
        let clock = try manualClock()
        defer { bps_clock_release(clock) }
        let rate = try makeRate(bucketConfig(rate: 1, burst: 1, clock: clock))
        defer { bps_rate_release(rate) }
        XCTAssertEqual(bps_rate_try_acquire(rate, 1), BPS_OK)
        final class Polls { var count = 0; var events: [bps_wait_event] = [] }
        let polls = Polls()
        var waiter = bps_waiter()
        waiter.size = MemoryLayout<bps_waiter>.size
        waiter.poll_interval_ns = 2 * ms
        waiter.context = Unmanaged.passUnretained(polls).toOpaque()
        waiter.hook = { context, event in
            let polls = Unmanaged<Polls>.fromOpaque(context!).takeUnretainedValue()
            polls.events.append(event)
            if event == BPS_WAIT_POLL { polls.count += 1 }
            return polls.count >= 2 ? 1 : 0
        }
        var waited: Int64 = -7
        XCTAssertEqual(bps_rate_acquire(rate, 1, -1, &waiter, &waited), BPS_CANCELLED)
        XCTAssertEqual(waited, -7)
        XCTAssertEqual(polls.events, [BPS_WAIT_BEGIN, BPS_WAIT_POLL, BPS_WAIT_POLL, BPS_WAIT_END])
        XCTAssertEqual(rateStats(rate).cancelled, 1)
        var small = waiter
        small.size = 4
        XCTAssertEqual(bps_rate_acquire(rate, 1, -1, &small, nil), BPS_INVALID_ARGUMENT)
    }

    func testLimiterAtomicAdmissionAndSlots() throws {
        let clock = try manualClock()
        defer { bps_clock_release(clock) }
        var config = bps_limiter_config()
        config.size = MemoryLayout<bps_limiter_config>.size
        config.max_concurrent = 1
        config.rate = 1
        config.burst = 5
        config.clock = clock
        var handle: OpaquePointer?
        XCTAssertEqual(bps_limiter_create(&config, &handle), BPS_OK)
        let limiter = try XCTUnwrap(handle)
        defer { bps_limiter_release(limiter) }
        XCTAssertEqual(bps_limiter_try_acquire(limiter), BPS_OK)
        for _ in 0..<3 { XCTAssertEqual(bps_limiter_try_acquire(limiter), BPS_FULL) }
        var stats = limiterStats(limiter)
        XCTAssertEqual(stats.tokens, 4)
        XCTAssertEqual(stats.refused, 3)
        XCTAssertEqual(stats.in_flight, 1)
        XCTAssertEqual(stats.utilization, 1)
        var retry: Int64 = 0
        XCTAssertEqual(bps_limiter_retry_after(limiter, &retry), BPS_OK)
        XCTAssertEqual(retry, -1, "only a released slot can admit")

        let probe = TicketProbe()
        var ticket: OpaquePointer?
        XCTAssertEqual(bps_limiter_enqueue(limiter, probeNotify, probeRelease,
                                           Unmanaged.passUnretained(probe).toOpaque(), &ticket), BPS_OK)
        XCTAssertEqual(bps_ticket_poll(ticket, &retry), BPS_OK)
        XCTAssertEqual(retry, -1)
        XCTAssertEqual(bps_limiter_set_max_concurrent(limiter, 2), BPS_OK)
        XCTAssertEqual(probe.notified, 1, "raising the limit admits the waiter at once")
        XCTAssertEqual(bps_ticket_poll(ticket, &retry), BPS_OK)
        XCTAssertEqual(retry, 0)
        XCTAssertEqual(bps_ticket_release(ticket, 0), BPS_OK)
        XCTAssertEqual(probe.released, 1)
        XCTAssertEqual(bps_limiter_release_slot(limiter), BPS_OK)
        XCTAssertEqual(bps_limiter_release_slot(limiter), BPS_OK)
        XCTAssertEqual(bps_limiter_release_slot(limiter), BPS_INVALID_STATE)
        stats = limiterStats(limiter)
        XCTAssertEqual(stats.granted, 2)
        XCTAssertEqual(stats.released, 2)
        XCTAssertEqual(stats.max_concurrent, 2)
        XCTAssertEqual(stats.burst, 5)
        XCTAssertEqual(bps_limiter_set_rate(limiter, 0, 0), BPS_OK, "rate removed, slots remain")
        XCTAssertEqual(bps_limiter_set_max_concurrent(limiter, BPS_LIMIT_NONE), BPS_INVALID_ARGUMENT)
        XCTAssertEqual(bps_limiter_set_max_concurrent(limiter, 0), BPS_INVALID_ARGUMENT)
        var waited: Int64 = -1
        XCTAssertEqual(bps_limiter_acquire(limiter, 0, nil, &waited), BPS_OK)
        XCTAssertEqual(waited, 0)
        XCTAssertEqual(bps_limiter_acquire(limiter, 50 * ms, nil, &waited), BPS_OK)
        XCTAssertEqual(bps_limiter_acquire(limiter, 0, nil, &waited), BPS_TIMED_OUT)
    }

    func testLimiterWaitingThreadIsWokenByARelease() throws {
        var config = bps_limiter_config()
        config.size = MemoryLayout<bps_limiter_config>.size
        config.max_concurrent = 1
        var handle: OpaquePointer?
        XCTAssertEqual(bps_limiter_create(&config, &handle), BPS_OK)
        let limiter = try XCTUnwrap(handle)
        defer { bps_limiter_release(limiter) }
        XCTAssertEqual(bps_limiter_try_acquire(limiter), BPS_OK)
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var result = BPS_OK
        let address = UInt(bitPattern: limiter)
        Thread {
            result = bps_limiter_acquire(OpaquePointer(bitPattern: address), 30 * second, nil, nil)
            done.signal()
        }.start()
        while limiterStats(limiter).waiting == 0 { usleep(1000) }
        XCTAssertEqual(bps_limiter_release_slot(limiter), BPS_OK)
        XCTAssertEqual(done.wait(timeout: .now() + 30), .success)
        XCTAssertEqual(result, BPS_OK)
        XCTAssertEqual(limiterStats(limiter).wakeups, 1)
    }
}

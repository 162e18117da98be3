// The C ABI of clocks, rate controllers, the limiter and their tickets (bpstream.h,
// "Clocks and rate controllers" and "Limiter"): @_cdecl thunks, nothing else.
//
// Handles (each +1 from its create call, moved by retain/release):
//   bps_clock*   Unmanaged<ManualClock>
//   bps_rate*    Unmanaged<RateHandle> (the controller, seen as AdjustableRateController)
//   bps_limiter* Unmanaged<Limiter>
//   bps_ticket*  Unmanaged<TicketHandle>, +1 from enqueue until bps_ticket_release
// Calls borrow a handle with _withUnsafeGuaranteedRef: the caller's reference keeps it alive.
import BPStreamCore
import CBPStream

/// What a bps_rate* points to.
final class RateHandle {
    let controller: any AdjustableRateController
    let kind: bps_rate_kind

    init(controller: any AdjustableRateController, kind: bps_rate_kind) {
        self.controller = controller
        self.kind = kind
    }
}

/// The caller's notify function and context; calls release_context when freed: when the
/// ticket handle is released and no notify (which holds it through the core) is running.
private final class TicketContext: @unchecked Sendable {
    let notify: bps_notify_fn
    let release: bps_context_release_fn?
    let context: UnsafeMutableRawPointer?

    init(notify: bps_notify_fn, release: bps_context_release_fn?, context: UnsafeMutableRawPointer?) {
        self.notify = notify
        self.release = release
        self.context = context
    }

    deinit { release?(context) }
}

/// What a bps_ticket* points to.
private final class TicketHandle {
    let ticket: AdmissionTicket
    let context: TicketContext

    init(ticket: AdmissionTicket, context: TicketContext) {
        self.ticket = ticket
        self.context = context
    }
}

/// The controller behind a bps_rate* (for a stream paced by it). The handle must be valid.
func rateController(_ handle: OpaquePointer) -> any RateController {
    Unmanaged<RateHandle>.fromOpaque(UnsafeRawPointer(handle)).takeUnretainedValue().controller
}

/// The clock behind a bps_clock*. The handle must be valid.
func controlClock(_ handle: OpaquePointer) -> any ControlClock {
    Unmanaged<ManualClock>.fromOpaque(UnsafeRawPointer(handle)).takeUnretainedValue()
}

/// The clock a config names: NULL is the monotonic clock.
private func clockOrSystem(_ handle: OpaquePointer?) -> any ControlClock {
    handle.map(controlClock) ?? SystemClock.shared
}

@inline(__always)
private func withRate(_ handle: OpaquePointer?, _ body: (RateHandle) -> bps_status) -> bps_status {
    guard let handle else { return BPS_INVALID_ARGUMENT }
    return Unmanaged<RateHandle>.fromOpaque(UnsafeRawPointer(handle))._withUnsafeGuaranteedRef(body)
}

@inline(__always)
private func withLimiter(_ handle: OpaquePointer?, _ body: (Limiter) -> bps_status) -> bps_status {
    guard let handle else { return BPS_INVALID_ARGUMENT }
    return Unmanaged<Limiter>.fromOpaque(UnsafeRawPointer(handle))._withUnsafeGuaranteedRef(body)
}

/// A blocking acquire's outcome as a status; writes the wait on success.
private func status(_ outcome: RateAcquireOutcome, _ outWaited: UnsafeMutablePointer<Int64>?) -> bps_status {
    switch outcome {
    case .granted(let waited):
        outWaited?.pointee = waited
        return BPS_OK
    case .timedOut: return BPS_TIMED_OUT
    case .cancelled: return BPS_CANCELLED
    case .impossible: return BPS_INVALID_ARGUMENT
    }
}

/// A permit count from C: 1 ... Int.max.
private func permits(_ n: Int64) -> Int? { n >= 1 ? Int(n) : nil }

/// Hands out a ticket handle for `ticket` (nil: BPS_INVALID_ARGUMENT).
private func ticketStatus(
    _ make: (@escaping @Sendable () -> Void) -> AdmissionTicket?, notify: bps_notify_fn?,
    release: bps_context_release_fn?, context: UnsafeMutableRawPointer?,
    out: UnsafeMutablePointer<OpaquePointer?>?
) -> bps_status {
    guard let notify, let out else { return BPS_INVALID_ARGUMENT }
    let owned = TicketContext(notify: notify, release: release, context: context)
    guard let ticket = make({ owned.notify(owned.context, BPS_TICKET_WAKE) }) else {
        return BPS_INVALID_ARGUMENT
    }
    out.pointee = OpaquePointer(Unmanaged.passRetained(TicketHandle(ticket: ticket, context: owned)).toOpaque())
    return BPS_OK
}

// MARK: - Clocks

@_cdecl("bps_clock_create_manual")
public func abiClockCreateManual(_ out: UnsafeMutablePointer<OpaquePointer?>?) -> bps_status {
    guard let out else { return BPS_INVALID_ARGUMENT }
    out.pointee = OpaquePointer(Unmanaged.passRetained(ManualClock()).toOpaque())
    return BPS_OK
}

@_cdecl("bps_clock_retain")
public func abiClockRetain(_ clock: OpaquePointer?) -> bps_status {
    guard let clock else { return BPS_INVALID_ARGUMENT }
    _ = Unmanaged<ManualClock>.fromOpaque(UnsafeRawPointer(clock)).retain()
    return BPS_OK
}

@_cdecl("bps_clock_release")
public func abiClockRelease(_ clock: OpaquePointer?) -> bps_status {
    guard let clock else { return BPS_INVALID_ARGUMENT }
    Unmanaged<ManualClock>.fromOpaque(UnsafeRawPointer(clock)).release()
    return BPS_OK
}

@_cdecl("bps_clock_now")
public func abiClockNow(_ clock: OpaquePointer?, _ out: UnsafeMutablePointer<Int64>?) -> bps_status {
    guard let out else { return BPS_INVALID_ARGUMENT }
    out.pointee = clockOrSystem(clock).now()
    return BPS_OK
}

@_cdecl("bps_clock_advance")
public func abiClockAdvance(_ clock: OpaquePointer?, _ ns: Int64) -> bps_status {
    guard let clock, ns >= 0 else { return BPS_INVALID_ARGUMENT }
    return Unmanaged<ManualClock>.fromOpaque(UnsafeRawPointer(clock))._withUnsafeGuaranteedRef {
        do { try $0.advance(by: ns) } catch { return BPS_INVALID_ARGUMENT }
        return BPS_OK
    }
}

// MARK: - Rate controllers

private func makeController(_ c: bps_rate_config) throws(StreamError) -> any AdjustableRateController {
    let clock = clockOrSystem(c.clock)
    func count(_ value: Int64, _ what: String) throws(StreamError) -> Int {
        guard value >= 1, value <= Int64(RateLimits.maximumPermits) else {
            throw .invalidArgument("\(what) out of range: \(value)")
        }
        return Int(value)
    }
    switch c.kind {
    case BPS_RATE_TOKEN_BUCKET:
        return try TokenBucket(rate: c.rate, burst: count(c.burst, "burst"),
                               startFull: c.start_full != 0, clock: clock)
    case BPS_RATE_SLIDING_WINDOW:
        return try SlidingWindow(limit: count(c.limit, "limit"), windowNanoseconds: c.window_ns,
                                 clock: clock)
    case BPS_RATE_AIMD:
        return try AIMD(initial: c.initial, minimum: c.minimum, maximum: c.maximum,
                        increase: c.increase, decrease: c.decrease, windowNanoseconds: c.window_ns,
                        cooldownNanoseconds: c.cooldown_ns < 0 ? nil : c.cooldown_ns,
                        burst: c.burst == 0 ? 1 : count(c.burst, "burst"), clock: clock)
    default:
        throw .invalidArgument("unknown rate kind")
    }
}

@_cdecl("bps_rate_create")
public func abiRateCreate(
    _ config: UnsafePointer<bps_rate_config>?, _ out: UnsafeMutablePointer<OpaquePointer?>?
) -> bps_status {
    guard let config, let out, config.pointee.size >= MemoryLayout<bps_rate_config>.size else {
        return BPS_INVALID_ARGUMENT
    }
    do {
        let controller = try makeController(config.pointee)
        let handle = RateHandle(controller: controller, kind: config.pointee.kind)
        out.pointee = OpaquePointer(Unmanaged.passRetained(handle).toOpaque())
        return BPS_OK
    } catch {
        return BPS_INVALID_ARGUMENT
    }
}

@_cdecl("bps_rate_retain")
public func abiRateRetain(_ rate: OpaquePointer?) -> bps_status {
    guard let rate else { return BPS_INVALID_ARGUMENT }
    _ = Unmanaged<RateHandle>.fromOpaque(UnsafeRawPointer(rate)).retain()
    return BPS_OK
}

@_cdecl("bps_rate_release")
public func abiRateRelease(_ rate: OpaquePointer?) -> bps_status {
    guard let rate else { return BPS_INVALID_ARGUMENT }
    Unmanaged<RateHandle>.fromOpaque(UnsafeRawPointer(rate)).release()
    return BPS_OK
}

@_cdecl("bps_rate_try_acquire")
public func abiRateTryAcquire(_ rate: OpaquePointer?, _ n: Int64) -> bps_status {
    withRate(rate) { handle in
        guard let n = permits(n) else { return BPS_INVALID_ARGUMENT }
        switch handle.controller.attempt(n) {
        case .granted: return BPS_OK
        case .refused: return BPS_FULL
        case .impossible: return BPS_INVALID_ARGUMENT
        }
    }
}

@_cdecl("bps_rate_acquire")
public func abiRateAcquire(
    _ rate: OpaquePointer?, _ n: Int64, _ timeout: Int64, _ waiter: UnsafePointer<bps_waiter>?,
    _ outWaited: UnsafeMutablePointer<Int64>?
) -> bps_status {
    withRate(rate) { handle in
        guard let n = permits(n), var observer = CWaitObserver(waiter) else { return BPS_INVALID_ARGUMENT }
        return status(handle.controller.acquire(n, timeoutNanoseconds: timeout, observer: &observer), outWaited)
    }
}

@_cdecl("bps_rate_retry_after")
public func abiRateRetryAfter(_ rate: OpaquePointer?, _ n: Int64, _ out: UnsafeMutablePointer<Int64>?) -> bps_status {
    withRate(rate) { handle in
        guard let out, let n = permits(n), let delay = handle.controller.retryAfterNanoseconds(n) else {
            return BPS_INVALID_ARGUMENT
        }
        out.pointee = delay
        return BPS_OK
    }
}

@_cdecl("bps_rate_set_rate")
public func abiRateSetRate(_ rate: OpaquePointer?, _ perSecond: Double) -> bps_status {
    withRate(rate) { handle in
        do { try handle.controller.setRate(perSecond) } catch { return BPS_INVALID_ARGUMENT }
        return BPS_OK
    }
}

@_cdecl("bps_rate_get_rate")
public func abiRateGetRate(_ rate: OpaquePointer?, _ out: UnsafeMutablePointer<Double>?) -> bps_status {
    withRate(rate) { handle in
        guard let out else { return BPS_INVALID_ARGUMENT }
        out.pointee = handle.controller.currentRate
        return BPS_OK
    }
}

@_cdecl("bps_rate_set_limit")
public func abiRateSetLimit(_ rate: OpaquePointer?, _ limit: Double) -> bps_status {
    withRate(rate) { handle in
        do { try handle.controller.setLimit(limit) } catch { return BPS_INVALID_ARGUMENT }
        return BPS_OK
    }
}

@_cdecl("bps_rate_get_limit")
public func abiRateGetLimit(_ rate: OpaquePointer?, _ out: UnsafeMutablePointer<Double>?) -> bps_status {
    withRate(rate) { handle in
        guard let out else { return BPS_INVALID_ARGUMENT }
        out.pointee = handle.controller.limit
        return BPS_OK
    }
}

@_cdecl("bps_rate_on_success")
public func abiRateOnSuccess(_ rate: OpaquePointer?) -> bps_status {
    withRate(rate) { handle in
        handle.controller.recordSuccess()
        return BPS_OK
    }
}

@_cdecl("bps_rate_on_backpressure")
public func abiRateOnBackpressure(_ rate: OpaquePointer?) -> bps_status {
    withRate(rate) { handle in
        handle.controller.recordBackpressure()
        return BPS_OK
    }
}

@_cdecl("bps_rate_get_stats")
public func abiRateGetStats(_ rate: OpaquePointer?, _ out: UnsafeMutablePointer<bps_rate_stats>?) -> bps_status {
    withRate(rate) { handle in
        guard let out, out.pointee.size >= MemoryLayout<bps_rate_stats>.size else { return BPS_INVALID_ARGUMENT }
        let stats = handle.controller.rateStats()
        var c = bps_rate_stats()
        c.size = out.pointee.size
        c.kind = handle.kind
        c.granted = stats.counters.granted
        c.refused = stats.counters.refused
        c.timed_out = stats.counters.timedOut
        c.cancelled = stats.counters.cancelled
        c.waiting = UInt64(stats.waiting)
        c.wait_ns = stats.counters.waitNanoseconds
        c.wakeups = stats.counters.wakeups
        c.rate = stats.rate
        c.limit = stats.limit
        c.tokens = stats.tokens
        c.increases = stats.increases
        c.decreases = stats.decreases
        out.pointee = c
        return BPS_OK
    }
}

@_cdecl("bps_rate_enqueue")
public func abiRateEnqueue(
    _ rate: OpaquePointer?, _ n: Int64, _ notify: bps_notify_fn?, _ release: bps_context_release_fn?,
    _ context: UnsafeMutableRawPointer?, _ out: UnsafeMutablePointer<OpaquePointer?>?
) -> bps_status {
    withRate(rate) { handle in
        guard let n = permits(n) else { return BPS_INVALID_ARGUMENT }
        return ticketStatus({ handle.controller.enqueue(n, notify: $0) },
                            notify: notify, release: release, context: context, out: out)
    }
}

// MARK: - Tickets

@_cdecl("bps_ticket_poll")
public func abiTicketPoll(_ ticket: OpaquePointer?, _ out: UnsafeMutablePointer<Int64>?) -> bps_status {
    guard let ticket, let out else { return BPS_INVALID_ARGUMENT }
    return Unmanaged<TicketHandle>.fromOpaque(UnsafeRawPointer(ticket))._withUnsafeGuaranteedRef { handle in
        switch handle.ticket.poll() {
        case .granted: out.pointee = 0
        case .retryAfter(let ns): out.pointee = Swift.max(1, ns)
        case .waitForNotify: out.pointee = -1
        case .impossible: return BPS_INVALID_ARGUMENT
        }
        return BPS_OK
    }
}

@_cdecl("bps_ticket_release")
public func abiTicketRelease(_ ticket: OpaquePointer?, _ timedOut: Int32) -> bps_status {
    guard let ticket else { return BPS_INVALID_ARGUMENT }
    let handle = Unmanaged<TicketHandle>.fromOpaque(UnsafeRawPointer(ticket)).takeRetainedValue()
    handle.ticket.release(timedOut: timedOut != 0)
    return BPS_OK
}

// MARK: - Limiter

@_cdecl("bps_limiter_create")
public func abiLimiterCreate(
    _ config: UnsafePointer<bps_limiter_config>?, _ out: UnsafeMutablePointer<OpaquePointer?>?
) -> bps_status {
    guard let config, let out, config.pointee.size >= MemoryLayout<bps_limiter_config>.size else {
        return BPS_INVALID_ARGUMENT
    }
    let c = config.pointee
    guard c.max_concurrent == -1 || c.max_concurrent >= 1, c.burst >= 0, !c.rate.isNaN, c.rate >= 0
    else { return BPS_INVALID_ARGUMENT }
    let slots = c.max_concurrent == -1 ? nil : Int(exactly: c.max_concurrent)
    let rate = c.rate == 0 ? nil : c.rate
    let burst = rate == nil || c.burst == 0 ? nil : Int(exactly: c.burst)
    do {
        let limiter = try Limiter(maxConcurrent: slots, rate: rate, burst: burst, clock: clockOrSystem(c.clock))
        out.pointee = OpaquePointer(Unmanaged.passRetained(limiter).toOpaque())
        return BPS_OK
    } catch {
        return BPS_INVALID_ARGUMENT
    }
}

@_cdecl("bps_limiter_retain")
public func abiLimiterRetain(_ limiter: OpaquePointer?) -> bps_status {
    guard let limiter else { return BPS_INVALID_ARGUMENT }
    _ = Unmanaged<Limiter>.fromOpaque(UnsafeRawPointer(limiter)).retain()
    return BPS_OK
}

@_cdecl("bps_limiter_release")
public func abiLimiterRelease(_ limiter: OpaquePointer?) -> bps_status {
    guard let limiter else { return BPS_INVALID_ARGUMENT }
    Unmanaged<Limiter>.fromOpaque(UnsafeRawPointer(limiter)).release()
    return BPS_OK
}

@_cdecl("bps_limiter_try_acquire")
public func abiLimiterTryAcquire(_ limiter: OpaquePointer?) -> bps_status {
    withLimiter(limiter) { $0.tryAcquire() ? BPS_OK : BPS_FULL }
}

@_cdecl("bps_limiter_acquire")
public func abiLimiterAcquire(
    _ limiter: OpaquePointer?, _ timeout: Int64, _ waiter: UnsafePointer<bps_waiter>?,
    _ outWaited: UnsafeMutablePointer<Int64>?
) -> bps_status {
    withLimiter(limiter) { limiter in
        guard var observer = CWaitObserver(waiter) else { return BPS_INVALID_ARGUMENT }
        return status(limiter.acquire(timeoutNanoseconds: timeout, observer: &observer), outWaited)
    }
}

@_cdecl("bps_limiter_release_slot")
public func abiLimiterReleaseSlot(_ limiter: OpaquePointer?) -> bps_status {
    withLimiter(limiter) { $0.releaseSlot() ? BPS_OK : BPS_INVALID_STATE }
}

@_cdecl("bps_limiter_set_max_concurrent")
public func abiLimiterSetMaxConcurrent(_ limiter: OpaquePointer?, _ slots: Int64) -> bps_status {
    withLimiter(limiter) { limiter in
        guard slots == -1 || slots >= 1 else { return BPS_INVALID_ARGUMENT }
        do { try limiter.setMaxConcurrent(slots == -1 ? nil : Int(exactly: slots)) } catch {
            return BPS_INVALID_ARGUMENT
        }
        return BPS_OK
    }
}

@_cdecl("bps_limiter_set_rate")
public func abiLimiterSetRate(_ limiter: OpaquePointer?, _ rate: Double, _ burst: Int64) -> bps_status {
    withLimiter(limiter) { limiter in
        guard !rate.isNaN, rate >= 0, burst >= 0 else { return BPS_INVALID_ARGUMENT }
        do {
            try limiter.setRate(rate == 0 ? nil : rate, burst: burst == 0 ? nil : Int(exactly: burst))
        } catch {
            return BPS_INVALID_ARGUMENT
        }
        return BPS_OK
    }
}

@_cdecl("bps_limiter_retry_after")
public func abiLimiterRetryAfter(_ limiter: OpaquePointer?, _ out: UnsafeMutablePointer<Int64>?) -> bps_status {
    withLimiter(limiter) { limiter in
        guard let out else { return BPS_INVALID_ARGUMENT }
        out.pointee = limiter.retryAfterNanoseconds() ?? -1
        return BPS_OK
    }
}

@_cdecl("bps_limiter_get_stats")
public func abiLimiterGetStats(_ limiter: OpaquePointer?, _ out: UnsafeMutablePointer<bps_limiter_stats>?) -> bps_status {
    withLimiter(limiter) { limiter in
        guard let out, out.pointee.size >= MemoryLayout<bps_limiter_stats>.size else { return BPS_INVALID_ARGUMENT }
        let stats = limiter.stats()
        var c = bps_limiter_stats()
        c.size = out.pointee.size
        c.granted = stats.counters.granted
        c.refused = stats.counters.refused
        c.timed_out = stats.counters.timedOut
        c.cancelled = stats.counters.cancelled
        c.released = stats.released
        c.in_flight = UInt64(stats.inFlight)
        c.waiting = UInt64(stats.waiting)
        c.wait_ns = stats.counters.waitNanoseconds
        c.wakeups = stats.counters.wakeups
        c.max_concurrent = stats.maxConcurrent.map { Int64($0) } ?? -1
        c.rate = stats.rate ?? 0
        c.burst = Int64(stats.burst)
        c.tokens = stats.tokens
        c.utilization = stats.utilization
        out.pointee = c
        return BPS_OK
    }
}

@_cdecl("bps_limiter_enqueue")
public func abiLimiterEnqueue(
    _ limiter: OpaquePointer?, _ notify: bps_notify_fn?, _ release: bps_context_release_fn?,
    _ context: UnsafeMutableRawPointer?, _ out: UnsafeMutablePointer<OpaquePointer?>?
) -> bps_status {
    withLimiter(limiter) { limiter in
        ticketStatus({ limiter.enqueue(notify: $0) },
                     notify: notify, release: release, context: context, out: out)
    }
}

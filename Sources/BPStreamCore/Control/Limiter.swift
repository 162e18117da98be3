// Admission by work in progress and by rate, atomically: one grant takes one slot AND
// one rate token, or nothing.

/// The limiter's arithmetic, a pure value.
struct LimiterPermits: PermitPolicy {
    /// nil: no concurrency limit.
    var maxConcurrent: Int?
    /// Slots held now (may exceed `maxConcurrent` after it was lowered).
    var inFlight = 0
    /// nil: no rate limit.
    var bucket: TokenBucketPermits?
    /// Slots given back so far.
    var released: UInt64 = 0

    func canEverGrant(_ n: Int) -> Bool { n == 1 }

    func delay(for n: Int, now: Int64) -> Int64? {
        guard n == 1 else { return nil }
        if let maxConcurrent, inFlight >= maxConcurrent { return nil }  // a release must come
        return bucket?.delay(for: 1, now: now) ?? 0
    }

    /// Only a rate alone can tell: slots free when their holders say so.
    func estimatedDelay(forQueued demand: Int, now: Int64) -> Int64? {
        maxConcurrent == nil ? bucket?.estimatedDelay(forQueued: demand, now: now) : nil
    }

    mutating func take(_ n: Int, now: Int64) {
        inFlight += 1
        bucket?.take(1, now: now)
    }

    /// Gives one slot back; false (nothing changes) when none is held.
    mutating func releaseSlot() -> Bool {
        guard inFlight > 0 else { return false }
        inFlight -= 1
        released &+= 1
        return true
    }
}

/// A snapshot of a limiter.
public struct LimiterStats: Sendable, Equatable {
    /// Grants, refusals, timeouts, cancellations, wait time and wake-ups.
    public var counters: AdmissionCounters
    /// Slots given back.
    public var released: UInt64
    /// Slots held now.
    public var inFlight: Int
    /// Waiters now.
    public var waiting: Int
    /// nil: no concurrency limit.
    public var maxConcurrent: Int?
    /// nil: no rate limit.
    public var rate: Double?
    /// 0 when no rate limit.
    public var burst: Int
    /// Rate tokens now (0 when no rate limit).
    public var tokens: Double
    /// inFlight / maxConcurrent (0 without a concurrency limit).
    public var utilization: Double
}

/// Admission control by work in progress (`maxConcurrent` slots) and rate (a token
/// bucket), atomically: a grant takes one slot and one token together, or nothing.
///
/// `Limiter(maxConcurrent: 1, rate: 1, burst: 5)`: with one slot held, three refused
/// `tryAcquire()` calls leave the bucket's 4 tokens untouched.
///
/// - Important: Thread-safe. Waiters are admitted in arrival order; `tryAcquire` refuses
///   while any wait, even at the instant a slot frees; each released slot wakes exactly
///   one waiter. Raising a limit admits waiters at once.
public final class Limiter: @unchecked Sendable {
    let core: AdmissionCore<LimiterPermits>

    /// - Parameters:
    ///   - maxConcurrent: slots, 1 ... `RateLimits.maximumPermits`; nil: none.
    ///   - rate: tokens per second (> 0); nil: none. At least one limit is required.
    ///   - burst: the bucket's size (it starts full), 1 ... 2^31; nil: 1.
    ///   - clock: the time base.
    /// - Throws: `StreamError.invalidArgument` for a value out of range or no limit.
    public init(
        maxConcurrent: Int? = nil, rate: Double? = nil, burst: Int? = nil,
        clock: any ControlClock = SystemClock.shared
    ) throws(StreamError) {
        guard maxConcurrent != nil || rate != nil else {
            throw .invalidArgument("a limiter needs max_concurrent, rate, or both")
        }
        var policy = LimiterPermits()
        policy.maxConcurrent = try Self.checkSlots(maxConcurrent)
        if let rate {
            policy.bucket = try Self.bucket(rate: rate, burst: burst, now: clock.now())
        } else if burst != nil {
            throw .invalidArgument("burst needs a rate")
        }
        core = AdmissionCore(policy: policy, clock: clock)
    }

    private static func checkSlots(_ slots: Int?) throws(StreamError) -> Int? {
        guard let slots else { return nil }
        guard (1...RateLimits.maximumPermits).contains(slots) else {
            throw .invalidArgument("max_concurrent must be between 1 and \(RateLimits.maximumPermits), got \(slots)")
        }
        return slots
    }

    private static func bucket(rate: Double, burst: Int?, now: Int64) throws(StreamError) -> TokenBucketPermits {
        try checkRate(rate)
        let burst = burst ?? 1
        guard (1...RateLimits.maximumPermits).contains(burst) else {
            throw .invalidArgument("burst must be between 1 and \(RateLimits.maximumPermits), got \(burst)")
        }
        return TokenBucketPermits(rate: rate, burst: burst, startFull: true, now: now)
    }

    /// The clock every time of this limiter is on.
    public var clock: any ControlClock { core.clock }

    /// Admits one if a slot and a token are there and nobody waits; never waits, and
    /// takes nothing when it refuses.
    public func tryAcquire() -> Bool { core.tryAcquire(1) == .granted }

    /// Waits in line to be admitted. `timeoutNanoseconds` on the limiter's clock: `< 0` no
    /// limit, `0` never waits. The observer's hooks run on this thread, unlocked.
    public func acquire<Observer: WaitObserver>(
        timeoutNanoseconds: Int64, observer: inout Observer
    ) -> RateAcquireOutcome {
        core.acquire(1, timeoutNanoseconds: timeoutNanoseconds, observer: &observer)
    }

    /// Waits without hooks.
    public func acquire(timeoutNanoseconds: Int64 = -1) -> RateAcquireOutcome {
        var observer = NoWaitObserver()
        return acquire(timeoutNanoseconds: timeoutNanoseconds, observer: &observer)
    }

    /// Gives one slot back, waking the next waiter it admits. Returns false (nothing
    /// changes) when no slot is held.
    @discardableResult
    public func releaseSlot() -> Bool {
        core.mutate { queue, _ in queue.policy.releaseSlot() }
    }

    /// Slots held now.
    public var inFlight: Int { core.read { queue, _ in queue.policy.inFlight } }

    /// The concurrency limit (nil: none).
    public var maxConcurrent: Int? { core.read { queue, _ in queue.policy.maxConcurrent } }

    /// Sets the concurrency limit; raising it admits waiters at once, lowering it below
    /// `inFlight` takes nothing back.
    /// - Throws: `StreamError.invalidArgument` out of range, or nil without a rate.
    public func setMaxConcurrent(_ slots: Int?) throws(StreamError) {
        let checked = try Self.checkSlots(slots)
        var ok = true
        core.mutate { queue, _ in
            if checked == nil && queue.policy.bucket == nil { ok = false; return }
            queue.policy.maxConcurrent = checked
        }
        if !ok { throw .invalidArgument("a limiter needs max_concurrent, rate, or both") }
    }

    /// The rate (nil: none).
    public var rate: Double? { core.read { queue, _ in queue.policy.bucket?.rate } }

    /// Sets the rate and burst (nil burst: keep it, 1 for a new bucket, which starts full);
    /// raising it admits waiters at once.
    /// - Throws: `StreamError.invalidArgument` out of range, or no rate without slots.
    public func setRate(_ rate: Double?, burst: Int? = nil) throws(StreamError) {
        if let rate { try checkRate(rate) }
        if let burst, !(1...RateLimits.maximumPermits).contains(burst) {
            throw .invalidArgument("burst must be between 1 and \(RateLimits.maximumPermits), got \(burst)")
        }
        var ok = true
        core.mutate { queue, now in
            guard let rate else {
                if queue.policy.maxConcurrent == nil { ok = false; return }
                queue.policy.bucket = nil
                return
            }
            if var bucket = queue.policy.bucket {
                bucket.setRate(rate, now: now)
                if let burst { bucket.setBurst(burst, now: now) }
                queue.policy.bucket = bucket
            } else {
                queue.policy.bucket = TokenBucketPermits(rate: rate, burst: burst ?? 1, startFull: true, now: now)
            }
        }
        if !ok { throw .invalidArgument("a limiter needs max_concurrent, rate, or both") }
    }

    /// Clock nanoseconds until one admission would be possible if nobody waited: 0 now,
    /// nil when only a released slot can admit.
    public func retryAfterNanoseconds() -> Int64? { core.retryAfter(1) }

    /// Joins the queue for one admission without a thread. A granted ticket holds a slot
    /// (give it back with `releaseSlot()`).
    public func enqueue(notify: @escaping @Sendable () -> Void) -> AdmissionTicket {
        core.enqueue(1, notify: notify)!  // n == 1 is always grantable
    }

    /// A snapshot.
    public func stats() -> LimiterStats {
        core.read { queue, now in
            let policy = queue.policy
            let utilization = policy.maxConcurrent.map { Double(policy.inFlight) / Double($0) } ?? 0
            return LimiterStats(
                counters: queue.counters, released: policy.released, inFlight: policy.inFlight,
                waiting: queue.waitingCount, maxConcurrent: policy.maxConcurrent,
                rate: policy.bucket?.rate, burst: policy.bucket?.burst ?? 0,
                tokens: policy.bucket?.tokens(now: now) ?? 0, utilization: utilization)
        }
    }
}

// A token bucket: tokens refill continuously at `rate` per second, never above `burst`;
// a grant of n takes n tokens.

/// The bucket's arithmetic, a pure value (also paces AIMD and the limiter's rate).
struct TokenBucketPermits: PermitPolicy {
    /// Below this many tokens short of a grant, the grant is due (float rounding).
    static var tolerance: Double { 1e-9 }

    private(set) var rate: Double
    private(set) var burst: Int
    /// Tokens at `updatedAt`.
    private var stored: Double
    private var updatedAt: Int64

    init(rate: Double, burst: Int, startFull: Bool, now: Int64) {
        self.rate = rate
        self.burst = burst
        self.stored = startFull ? Double(burst) : 0
        self.updatedAt = now
    }

    /// Tokens at `now`.
    func tokens(now: Int64) -> Double {
        let elapsed = Double(Swift.max(0, now - updatedAt))
        return Swift.min(Double(burst), stored + elapsed * rate / 1e9)
    }

    func canEverGrant(_ n: Int) -> Bool { n <= burst }

    func delay(for n: Int, now: Int64) -> Int64? {
        guard n <= burst else { return nil }
        let missing = Double(n) - tokens(now: now)
        if missing <= Self.tolerance { return 0 }
        let ns = (missing * 1e9 / rate).rounded(.up)
        return ns >= 9e18 ? Int64(9e18) : Swift.max(1, Int64(ns))
    }

    func estimatedDelay(forQueued demand: Int, now: Int64) -> Int64? {
        let missing = Double(demand) - tokens(now: now)
        if missing <= Self.tolerance { return 0 }
        let ns = (missing * 1e9 / rate).rounded(.up)
        return ns >= 9e18 ? Int64(9e18) : Swift.max(1, Int64(ns))
    }

    mutating func take(_ n: Int, now: Int64) {
        refill(now: now)
        stored = Swift.max(0, stored - Double(n))
    }

    private mutating func refill(now: Int64) {
        stored = tokens(now: now)
        updatedAt = Swift.max(updatedAt, now)
    }

    /// The tokens earned at the old rate stay; the new rate counts from `now`.
    mutating func setRate(_ rate: Double, now: Int64) {
        refill(now: now)
        self.rate = rate
    }

    /// Tokens above the new burst are dropped.
    mutating func setBurst(_ burst: Int, now: Int64) {
        refill(now: now)
        self.burst = burst
        stored = Swift.min(stored, Double(burst))
    }
}

/// A token bucket: `rate` tokens per second, at most `burst` held; a grant of n takes n.
///
/// Rate 100/s, burst 10 (starting full): ten immediate grants, the eleventh refused with
/// `retryAfterNanoseconds(1) == 10_000_000`, then one grant per 10 ms.
///
/// - Important: Thread-safe. Waiters are served first come, first served; `tryAcquire`
///   refuses while any wait; only the head of the queue waits for time.
public final class TokenBucket: AdjustableRateController, @unchecked Sendable {
    let core: AdmissionCore<TokenBucketPermits>

    /// - Parameters:
    ///   - rate: tokens per second, finite, > 0.
    ///   - burst: the most tokens held, 1 ... `RateLimits.maximumPermits`.
    ///   - startFull: start with `burst` tokens (else with none).
    ///   - clock: the time base (`SystemClock.shared`, or a `ManualClock` for tests).
    /// - Throws: `StreamError.invalidArgument` for a value out of range.
    public init(
        rate: Double, burst: Int, startFull: Bool = true,
        clock: any ControlClock = SystemClock.shared
    ) throws(StreamError) {
        try checkRate(rate)
        guard (1...RateLimits.maximumPermits).contains(burst) else {
            throw .invalidArgument("burst must be between 1 and \(RateLimits.maximumPermits), got \(burst)")
        }
        core = AdmissionCore(
            policy: TokenBucketPermits(rate: rate, burst: burst, startFull: startFull, now: clock.now()),
            clock: clock)
    }

    public var clock: any ControlClock { core.clock }
    public func tryAcquire(_ n: Int = 1) -> Bool { core.tryAcquire(n) == .granted }
    public func attempt(_ n: Int) -> AdmissionTry { core.tryAcquire(n) }

    public func acquire<Observer: WaitObserver>(
        _ n: Int, timeoutNanoseconds: Int64, observer: inout Observer
    ) -> RateAcquireOutcome {
        core.acquire(n, timeoutNanoseconds: timeoutNanoseconds, observer: &observer)
    }

    /// Waits without hooks (see `acquire(_:timeoutNanoseconds:observer:)`).
    public func acquire(_ n: Int = 1, timeoutNanoseconds: Int64 = -1) -> RateAcquireOutcome {
        var observer = NoWaitObserver()
        return acquire(n, timeoutNanoseconds: timeoutNanoseconds, observer: &observer)
    }

    public func retryAfterNanoseconds(_ n: Int = 1) -> Int64? {
        guard core.canEverGrant(n) else { return nil }
        return core.retryAfter(n)
    }

    /// Tokens per second.
    public var currentRate: Double { core.read { queue, _ in queue.policy.rate } }

    public func setRate(_ perSecond: Double) throws(StreamError) {
        try checkRate(perSecond)
        core.mutate { queue, now in queue.policy.setRate(perSecond, now: now) }
    }

    /// The burst.
    public var limit: Double { core.read { queue, _ in Double(queue.policy.burst) } }

    /// Sets the burst (a whole number); tokens above it are dropped.
    public func setLimit(_ limit: Double) throws(StreamError) {
        let burst = try permitCount(limit, what: "burst")
        core.mutate { queue, now in queue.policy.setBurst(burst, now: now) }
    }

    /// Tokens now.
    public var tokens: Double { core.read { queue, now in queue.policy.tokens(now: now) } }

    public func recordSuccess() {}
    public func recordBackpressure() {}

    public func rateStats() -> RateStats {
        core.read { queue, now in
            RateStats(counters: queue.counters, waiting: queue.waitingCount, rate: queue.policy.rate,
                      limit: Double(queue.policy.burst), tokens: queue.policy.tokens(now: now),
                      increases: 0, decreases: 0)
        }
    }

    public func enqueue(_ n: Int = 1, notify: @escaping @Sendable () -> Void) -> AdmissionTicket? {
        core.enqueue(n, notify: notify)
    }
}

// AIMD: a rate limit that grows additively while the consumer keeps up and shrinks
// multiplicatively on backpressure, at most once per congestion episode. As a rate
// controller it paces grants at `limit` per second through a token bucket of its own.

/// The AIMD limit as a pure value: windows are closed lazily, whenever time is read.
struct AIMDControl: Equatable {
    private(set) var limit: Double
    let minimum: Double
    let maximum: Double
    let increase: Double
    let decrease: Double
    let window: Int64
    let cooldown: Int64
    private(set) var increases: UInt64 = 0
    private(set) var decreases: UInt64 = 0
    /// The current window began here (clock time).
    private var windowStart: Int64
    private var sawSuccess = false
    private var sawBackpressure = false
    private var lastDecrease: Int64? = nil

    /// Checks every rule of the issue; the message names the bad parameter.
    init(initial: Double, minimum: Double, maximum: Double, increase: Double, decrease: Double,
         window: Int64, cooldown: Int64?, now: Int64) throws(StreamError) {
        guard minimum.isFinite, minimum > 0 else {
            throw .invalidArgument("minimum must be a finite number above 0, got \(minimum)")
        }
        guard !maximum.isNaN, minimum <= maximum else {
            throw .invalidArgument("minimum (\(minimum)) must not exceed maximum (\(maximum))")
        }
        guard initial.isFinite, initial >= minimum, initial <= maximum else {
            throw .invalidArgument("initial must be between minimum and maximum, got \(initial)")
        }
        guard increase.isFinite, increase > 0 else {
            throw .invalidArgument("increase must be a finite number above 0, got \(increase)")
        }
        guard decrease > 0, decrease < 1 else {
            throw .invalidArgument("decrease must be between 0 and 1 (both excluded), got \(decrease)")
        }
        guard window > 0 else { throw .invalidArgument("window must be above 0, got \(window) ns") }
        if let cooldown, cooldown < 0 {
            throw .invalidArgument("cooldown must not be negative, got \(cooldown) ns")
        }
        self.limit = initial
        self.minimum = minimum
        self.maximum = maximum
        self.increase = increase
        self.decrease = decrease
        self.window = window
        self.cooldown = cooldown ?? window
        self.windowStart = now
    }

    /// Closes every window that ended by `now`: the first grows the limit if it saw a
    /// success and no backpressure; the idle ones after it change nothing.
    mutating func roll(to now: Int64) {
        guard now - windowStart >= window else { return }
        if sawSuccess && !sawBackpressure && limit < maximum {
            limit = Swift.min(maximum, limit + increase)
            increases &+= 1
        }
        sawSuccess = false
        sawBackpressure = false
        windowStart += (now - windowStart) / window * window
    }

    mutating func recordSuccess(now: Int64) {
        roll(to: now)
        sawSuccess = true
    }

    /// Backs off unless a decrease happened within the cooldown (one per episode).
    mutating func recordBackpressure(now: Int64) {
        roll(to: now)
        sawBackpressure = true
        if let last = lastDecrease, now - last < cooldown { return }
        limit = Swift.max(minimum, limit * decrease)
        decreases &+= 1
        lastDecrease = now
    }

    /// Sets the limit, clamped to [minimum, maximum].
    mutating func setLimit(_ value: Double) {
        limit = Swift.min(maximum, Swift.max(minimum, value))
    }
}

/// AIMD's permits: a token bucket whose rate follows the AIMD limit.
struct AIMDPermits: PermitPolicy {
    var control: AIMDControl
    var bucket: TokenBucketPermits

    func canEverGrant(_ n: Int) -> Bool { bucket.canEverGrant(n) }
    func delay(for n: Int, now: Int64) -> Int64? { bucket.delay(for: n, now: now) }
    mutating func take(_ n: Int, now: Int64) { bucket.take(n, now: now) }
    func estimatedDelay(forQueued demand: Int, now: Int64) -> Int64? {
        bucket.estimatedDelay(forQueued: demand, now: now)
    }

    mutating func advance(to now: Int64) {
        control.roll(to: now)
        syncRate(now: now)
    }

    mutating func syncRate(now: Int64) {
        if bucket.rate != control.limit { bucket.setRate(control.limit, now: now) }
    }
}

/// An adaptive rate limit (additive increase, multiplicative decrease), pacing grants at
/// `limit` permits per second through a token bucket of `burst` (default 1: evenly spaced).
///
/// The limit grows by `increase` once per window that saw at least one `recordSuccess()`
/// and no backpressure; it is multiplied by `decrease` on a backpressure event, at most
/// once per `cooldown` (default: one window); it stays within [minimum, maximum].
/// Initial 100: one event gives 50; two events in one window give 50, not 25; ten windows
/// with successes later it is 60.
///
/// - Important: Thread-safe; waiters as for every controller (FIFO, no barging).
public final class AIMD: AdjustableRateController, @unchecked Sendable {
    let core: AdmissionCore<AIMDPermits>

    /// - Parameters:
    ///   - initial: the first limit, in permits per second (minimum ... maximum).
    ///   - minimum: > 0. maximum: >= minimum (`.infinity`: none).
    ///   - increase: > 0. decrease: in (0, 1).
    ///   - windowNanoseconds: > 0. cooldownNanoseconds: >= 0; nil: one window.
    ///   - burst: the pacing bucket's burst, 1 ... `RateLimits.maximumPermits`.
    /// - Throws: `StreamError.invalidArgument` naming the bad parameter.
    public init(
        initial: Double, minimum: Double = 1, maximum: Double = .infinity,
        increase: Double = 1, decrease: Double = 0.5,
        windowNanoseconds: Int64 = 1_000_000_000, cooldownNanoseconds: Int64? = nil,
        burst: Int = 1, clock: any ControlClock = SystemClock.shared
    ) throws(StreamError) {
        guard (1...RateLimits.maximumPermits).contains(burst) else {
            throw .invalidArgument("burst must be between 1 and \(RateLimits.maximumPermits), got \(burst)")
        }
        let now = clock.now()
        let control = try AIMDControl(
            initial: initial, minimum: minimum, maximum: maximum, increase: increase,
            decrease: decrease, window: windowNanoseconds, cooldown: cooldownNanoseconds, now: now)
        core = AdmissionCore(
            policy: AIMDPermits(control: control,
                                bucket: TokenBucketPermits(rate: initial, burst: burst, startFull: true, now: now)),
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

    /// The limit, in permits per second.
    public var currentRate: Double { limit }

    /// Sets the limit (clamped to [minimum, maximum]).
    public func setRate(_ perSecond: Double) throws(StreamError) {
        try checkRate(perSecond)
        try setLimit(perSecond)
    }

    /// The current limit, in permits per second (windows that ended are closed first).
    public var limit: Double {
        core.read { queue, now in
            queue.policy.advance(to: now)
            return queue.policy.control.limit
        }
    }

    /// Sets the limit (clamped to [minimum, maximum]); sleeping waiters re-plan at once.
    public func setLimit(_ limit: Double) throws(StreamError) {
        guard !limit.isNaN else { throw .invalidArgument("limit must be a number, got nan") }
        core.mutate { queue, now in
            queue.policy.advance(to: now)
            queue.policy.control.setLimit(limit)
            queue.policy.syncRate(now: now)
        }
    }

    public func recordSuccess() {
        core.mutate { queue, now in
            queue.policy.control.recordSuccess(now: now)
            queue.policy.syncRate(now: now)
        }
    }

    public func recordBackpressure() {
        core.mutate { queue, now in
            queue.policy.control.recordBackpressure(now: now)
            queue.policy.syncRate(now: now)
        }
    }

    public func rateStats() -> RateStats {
        core.read { queue, now in
            queue.policy.advance(to: now)
            let control = queue.policy.control
            return RateStats(
                counters: queue.counters, waiting: queue.waitingCount, rate: control.limit,
                limit: control.limit, tokens: queue.policy.bucket.tokens(now: now),
                increases: control.increases, decreases: control.decreases)
        }
    }

    public func enqueue(_ n: Int = 1, notify: @escaping @Sendable () -> Void) -> AdmissionTicket? {
        core.enqueue(n, notify: notify)
    }
}

// A sliding window with an exact log: at most `limit` grants in any window of `window`
// nanoseconds. The log holds the clock time of each granted permit, oldest first.

/// The window's arithmetic, a pure value.
struct SlidingWindowPermits: PermitPolicy {
    private(set) var limit: Int
    let window: Int64
    /// Grant times of the permits, nondecreasing; entries before `start` are gone.
    private var log: [Int64] = []
    private var start = 0

    init(limit: Int, window: Int64) {
        self.limit = limit
        self.window = window
    }

    /// Index of the first logged permit still inside the window ending at `now`
    /// (granted after `now - window`).
    private func firstActive(now: Int64) -> Int {
        let cutoff = now - window
        var low = start, high = log.count
        while low < high {
            let mid = (low + high) / 2
            if log[mid] <= cutoff { low = mid + 1 } else { high = mid }
        }
        return low
    }

    /// Permits granted within the window ending at `now`.
    func used(now: Int64) -> Int { log.count - firstActive(now: now) }

    func canEverGrant(_ n: Int) -> Bool { n <= limit }

    func delay(for n: Int, now: Int64) -> Int64? {
        guard n <= limit else { return nil }
        let first = firstActive(now: now)
        let excess = (log.count - first) + n - limit
        if excess <= 0 { return 0 }
        // The excess-th oldest permit in the window must leave it first.
        return Swift.max(1, log[first + excess - 1] + window - now)
    }

    mutating func take(_ n: Int, now: Int64) {
        let now = Swift.max(now, log.last ?? now)  // the log stays in order
        start = firstActive(now: now)
        if start > 64 && start * 2 > log.count {
            log.removeFirst(start)
            start = 0
        }
        log.append(contentsOf: repeatElement(now, count: n))
    }

    mutating func setLimit(_ limit: Int) { self.limit = limit }
}

/// At most `limit` grants in any sliding window of `window` (an exact log of grants).
///
/// Limit 5 per 1.0 s: hits at 0.0, 0.1 ... 0.4 s are granted, one at 0.5 s is refused with
/// a retry-after of 0.5 s (a refusal is not logged), one at 1.0 s is granted.
///
/// - Important: Thread-safe. Waiters are served first come, first served; `tryAcquire`
///   refuses while any wait; only the head of the queue waits for time.
public final class SlidingWindow: AdjustableRateController, @unchecked Sendable {
    let core: AdmissionCore<SlidingWindowPermits>

    /// - Parameters:
    ///   - limit: grants per window, 1 ... `RateLimits.maximumPermits`.
    ///   - windowNanoseconds: the window, > 0.
    ///   - clock: the time base.
    /// - Throws: `StreamError.invalidArgument` for a value out of range.
    public init(
        limit: Int, windowNanoseconds: Int64, clock: any ControlClock = SystemClock.shared
    ) throws(StreamError) {
        guard (1...RateLimits.maximumPermits).contains(limit) else {
            throw .invalidArgument("limit must be between 1 and \(RateLimits.maximumPermits), got \(limit)")
        }
        guard windowNanoseconds > 0 else {
            throw .invalidArgument("window must be above 0, got \(windowNanoseconds) ns")
        }
        core = AdmissionCore(policy: SlidingWindowPermits(limit: limit, window: windowNanoseconds),
                             clock: clock)
    }

    public var clock: any ControlClock { core.clock }
    /// The window in clock nanoseconds.
    public var windowNanoseconds: Int64 { core.read { queue, _ in queue.policy.window } }
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

    /// limit / window, per second.
    public var currentRate: Double {
        core.read { queue, _ in Double(queue.policy.limit) * 1e9 / Double(queue.policy.window) }
    }

    /// Sets the limit to round(rate × window) (at least 1 is required).
    public func setRate(_ perSecond: Double) throws(StreamError) {
        try checkRate(perSecond)
        let window = windowNanoseconds
        try setLimit((perSecond * Double(window) / 1e9).rounded())
    }

    /// Grants per window.
    public var limit: Double { core.read { queue, _ in Double(queue.policy.limit) } }

    /// Sets grants per window (a whole number, 1 ... `RateLimits.maximumPermits`).
    public func setLimit(_ limit: Double) throws(StreamError) {
        let count = try permitCount(limit, what: "limit")
        core.mutate { queue, _ in queue.policy.setLimit(count) }
    }

    public func recordSuccess() {}
    public func recordBackpressure() {}

    public func rateStats() -> RateStats {
        core.read { queue, now in
            let policy = queue.policy
            return RateStats(
                counters: queue.counters, waiting: queue.waitingCount,
                rate: Double(policy.limit) * 1e9 / Double(policy.window), limit: Double(policy.limit),
                tokens: Double(Swift.max(0, policy.limit - policy.used(now: now))),
                increases: 0, decreases: 0)
        }
    }

    public func enqueue(_ n: Int = 1, notify: @escaping @Sendable () -> Void) -> AdmissionTicket? {
        core.enqueue(n, notify: notify)
    }
}

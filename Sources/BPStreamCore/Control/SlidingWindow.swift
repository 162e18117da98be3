// A sliding window with an exact log: at most `limit` grants in any window of `window`
// nanoseconds. The log holds one entry per grant time (its clock time and the permits
// granted then), oldest first, so its size is the number of grants in the window, never
// the number of permits (a limit of 2^31 granted at once is one entry).

/// The window's arithmetic, a pure value.
struct SlidingWindowPermits: PermitPolicy {
    private(set) var limit: Int
    let window: Int64
    /// Grant times, strictly increasing (grants at one time share an entry); entries
    /// before `start` are gone.
    private var times: [Int64] = []
    /// `ends[i]`: permits logged from the beginning through entry `i` (a running total
    /// that never goes back, so permit positions stay comparable after compaction).
    private var ends: [Int] = []
    /// The running total before the first entry kept in `times` (what compaction dropped).
    private var dropped = 0
    private var start = 0

    init(limit: Int, window: Int64) {
        self.limit = limit
        self.window = window
    }

    /// Entries kept (for tests: the log is compacted as grants leave the window).
    var entryCount: Int { times.count }

    /// The running total before entry `index`.
    private func endBefore(_ index: Int) -> Int { index == 0 ? dropped : ends[index - 1] }

    private var total: Int { ends.last ?? dropped }

    /// Index of the first logged entry still inside the window ending at `now`
    /// (granted after `now - window`).
    private func firstActive(now: Int64) -> Int {
        let cutoff = now - window
        var low = start, high = times.count
        while low < high {
            let mid = (low + high) / 2
            if times[mid] <= cutoff { low = mid + 1 } else { high = mid }
        }
        return low
    }

    /// Permits granted within the window ending at `now`.
    func used(now: Int64) -> Int { total - endBefore(firstActive(now: now)) }

    func canEverGrant(_ n: Int) -> Bool { n <= limit }

    func delay(for n: Int, now: Int64) -> Int64? {
        guard n <= limit else { return nil }
        let first = firstActive(now: now)
        let excess = (total - endBefore(first)) + n - limit
        if excess <= 0 { return 0 }
        // The excess-th oldest permit in the window must leave it first: the entry that
        // holds running position endBefore(first) + excess.
        let position = endBefore(first) + excess
        var low = first, high = times.count - 1
        while low < high {
            let mid = (low + high) / 2
            if ends[mid] >= position { high = mid } else { low = mid + 1 }
        }
        return Swift.max(1, times[low] + window - now)
    }

    mutating func take(_ n: Int, now: Int64) {
        let now = Swift.max(now, times.last ?? now)  // the log stays in order
        start = firstActive(now: now)
        if start > 64 && start * 2 > times.count {
            dropped = ends[start - 1]
            times.removeFirst(start)
            ends.removeFirst(start)
            start = 0
        }
        let through = total + n
        if times.last == now {
            ends[ends.count - 1] = through
        } else {
            times.append(now)
            ends.append(through)
        }
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
    public func attempt(_ n: Int, countingRefusal: Bool) -> AdmissionTry {
        core.tryAcquire(n, countRefusal: countingRefusal)
    }

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

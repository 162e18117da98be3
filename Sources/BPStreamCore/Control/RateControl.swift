// What every rate controller of the package offers beyond the `RateController` seam a
// stream needs: non-waiting attempts that tell "never" from "not now", retry-after,
// settable rates and limits, statistics, and tickets for waiters without a thread.

/// A snapshot of a rate controller.
public struct RateStats: Sendable, Equatable {
    /// Grants, refusals, timeouts, cancellations, wait time and wake-ups.
    public var counters: AdmissionCounters
    /// Waiters in the queue now (threads and tickets).
    public var waiting: Int
    /// Permits per second now (AIMD: its limit).
    public var rate: Double
    /// Bucket: its burst; window: its limit; AIMD: its limit.
    public var limit: Double
    /// Bucket and AIMD: tokens now; window: permits free now.
    public var tokens: Double
    /// AIMD: additive increases so far (0 for the others).
    public var increases: UInt64
    /// AIMD: multiplicative decreases so far (0 for the others).
    public var decreases: UInt64
}

/// A `RateController` with the whole control surface: TokenBucket, SlidingWindow, AIMD.
///
/// - Important: Thread-safe. Nothing here runs caller code under the controller's lock;
///   a ticket's notify runs outside it, on whichever thread made the change.
public protocol AdjustableRateController: RateController {
    /// The clock every time of this controller is on.
    var clock: any ControlClock { get }
    /// Like `tryAcquire`, telling a refusal from an `n` that can never be granted.
    func attempt(_ n: Int) -> AdmissionTry
    /// Clock nanoseconds until `n` permits would be there if nobody waited (0: now);
    /// nil when `n` can never be granted.
    func retryAfterNanoseconds(_ n: Int) -> Int64?
    /// Sets the rate in permits per second; sleeping waiters re-plan at once.
    func setRate(_ perSecond: Double) throws(StreamError)
    /// Bucket: its burst; window: its limit; AIMD: its limit.
    var limit: Double { get }
    /// Sets `limit`; sleeping waiters re-plan at once.
    func setLimit(_ limit: Double) throws(StreamError)
    /// A snapshot.
    func rateStats() -> RateStats
    /// Joins the queue for `n` permits without a thread (see `AdmissionTicket`); nil when
    /// `n` can never be granted. `notify` runs outside every lock, on any thread.
    func enqueue(_ n: Int, notify: @escaping @Sendable () -> Void) -> AdmissionTicket?
}

/// A positive count of permits from a Double limit (integer, 1 ... 2^31).
func permitCount(_ value: Double, what: String) throws(StreamError) -> Int {
    guard value.isFinite, value >= 1, value <= Double(RateLimits.maximumPermits),
          value == value.rounded() else {
        throw .invalidArgument("\(what) must be a whole number between 1 and \(RateLimits.maximumPermits), got \(value)")
    }
    return Int(value)
}

/// Bounds of rate controllers and the limiter.
public enum RateLimits {
    /// The largest burst, window limit or concurrency limit: 2^31.
    public static let maximumPermits = 1 << 31
}

func checkRate(_ rate: Double) throws(StreamError) {
    guard rate.isFinite, rate > 0 else {
        throw .invalidArgument("rate must be a finite number above 0 per second, got \(rate)")
    }
}

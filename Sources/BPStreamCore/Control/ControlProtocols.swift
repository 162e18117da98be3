// The seams of the control layer: what a stream needs from a clock and from a rate
// controller. Streams (flow states, rate pacing), rate controllers (TokenBucket,
// SlidingWindow, AIMD) and the Limiter meet only through these two protocols.

/// A source of time for rate controllers, limiters and a stream's flow accounting.
///
/// `SystemClock.shared` is the monotonic clock. A `ManualClock` stands still until it is
/// advanced, so tests and simulations decide what time it is.
///
/// - Important: Thread-safe: `now()` may be called from any thread at once.
public protocol ControlClock: AnyObject, Sendable {
    /// Nanoseconds on this clock's own monotonic timeline.
    func now() -> Int64
}

/// The monotonic clock (CLOCK_MONOTONIC): the time base of every timeout.
public final class SystemClock: ControlClock {
    /// The one instance.
    public static let shared = SystemClock()
    private init() {}
    @inlinable public func now() -> Int64 { MonotonicClock.now() }
}

/// How a blocking `RateController.acquire` ended.
public enum RateAcquireOutcome: Sendable, Equatable {
    /// The permits are the caller's; it waited this long (0: granted at once).
    case granted(waitedNanoseconds: Int64)
    /// The timeout passed first; nothing was taken.
    case timedOut
    /// The wait observer cancelled the wait (Ctrl-C); nothing was taken.
    case cancelled
    /// `n` can never be granted (more than the burst or the window's limit); nothing waited.
    case impossible
}

/// A rate controller a stream can be paced by (TokenBucket, SlidingWindow, AIMD).
///
/// - Important: Thread-safe. `acquire` waits WITHOUT any stream lock held and runs the
///   observer's hooks on the waiting thread (release a runtime lock, answer Ctrl-C).
///   Waiters are served first come, first served; `tryAcquire` refuses while any wait.
public protocol RateController: AnyObject, Sendable {
    /// Takes `n` permits if they are there now and nobody waits; never waits, and takes
    /// nothing when it refuses.
    func tryAcquire(_ n: Int) -> Bool
    /// Waits (first come, first served) until `n` permits are there, then takes them.
    /// `timeoutNanoseconds`: `< 0` no limit, `0` never waits, `> 0` at most that long.
    func acquire<Observer: WaitObserver>(
        _ n: Int, timeoutNanoseconds: Int64, observer: inout Observer
    ) -> RateAcquireOutcome
    /// The current limit in permits per second (a stream's `stats().rate_limit`).
    var currentRate: Double { get }
    /// A stream's feedback: a put went through after being held by this controller while
    /// the stream was healthy. AIMD grows on it; the other controllers ignore it.
    func recordSuccess()
    /// A stream's feedback: a put had to wait for room, or the stream entered PAUSED.
    /// AIMD backs off on it; the other controllers ignore it.
    func recordBackpressure()
}

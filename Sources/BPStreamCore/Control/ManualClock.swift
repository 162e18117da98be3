// A clock that moves only when told to: tests and simulations decide what time it is.
// Controllers waiting on it subscribe (weakly) and re-plan whenever it moves.
//
// Lock order: controllers read the time under their own lock, so reading it takes no
// lock (an atomic); the clock's lock guards only the listener list and is never held
// while another lock is taken (listeners are called after unlocking).
import Synchronization

/// Something that waits on a `ManualClock` and must re-plan when it moves.
///
/// - Important: `clockDidMove()` is called on the advancing thread WITHOUT the clock's
///   lock held, so it may take its own lock and read the clock.
protocol ClockListener: AnyObject, Sendable {
    func clockDidMove()
}

/// A clock that starts at 0 and moves only by `advance`.
///
/// Every controller and limiter on the clock re-plans as soon as it moves: a waiter whose
/// permits (or timeout) are due by the new time is woken, a ticket due by then notified.
/// Waits on a manual clock still poll their `WaitObserver` on real time.
///
/// - Important: Thread-safe.
public final class ManualClock: ControlClock, @unchecked Sendable {
    private struct WeakListener {
        weak var listener: (any ClockListener)?
    }

    private let lock = PthreadLock()
    /// Written only under `lock` (advances are serialised); read anywhere.
    private let time = Atomic<Int64>(0)
    /// Guarded by `lock`; entries whose listener is gone are pruned on the next advance.
    private var listeners: [WeakListener] = []

    /// A clock at time 0.
    public init() {
        ForkRegistry.register(ForkMember(lock: lock, conditions: []) {}, for: ObjectIdentifier(self))
    }

    deinit { ForkRegistry.unregister(ObjectIdentifier(self)) }

    /// Nanoseconds since the clock was made, as far as it was advanced.
    public func now() -> Int64 {
        time.load(ordering: .acquiring)
    }

    /// Moves the clock forward by `nanoseconds` and lets every controller on it re-plan
    /// (outside the clock's lock, on this thread).
    /// - Throws: `StreamError.invalidArgument` for a negative step.
    public func advance(by nanoseconds: Int64) throws(StreamError) {
        guard nanoseconds >= 0 else {
            throw .invalidArgument("a clock only moves forward, got \(nanoseconds) ns")
        }
        lock.lock()
        time.store(time.load(ordering: .relaxed).addingSaturated(nanoseconds), ordering: .releasing)
        listeners.removeAll { $0.listener == nil }
        let current = listeners.compactMap(\.listener)
        lock.unlock()
        for listener in current { listener.clockDidMove() }
    }

    /// Moves the clock forward by `seconds` (rounded to whole nanoseconds).
    /// - Throws: `StreamError.invalidArgument` for a negative or non-finite step.
    public func advance(seconds: Double) throws(StreamError) {
        guard seconds.isFinite, seconds >= 0 else {
            throw .invalidArgument("a clock only moves forward, got \(seconds) s")
        }
        try advance(by: nanoseconds(fromSeconds: seconds))
    }

    func addListener(_ listener: any ClockListener) {
        lock.lock()
        listeners.append(WeakListener(listener: listener))
        lock.unlock()
    }
}

/// Seconds as whole nanoseconds, rounded, clamped to `0...Int64.max`.
@usableFromInline
func nanoseconds(fromSeconds seconds: Double) -> Int64 {
    let ns = (seconds * 1e9).rounded()
    if !(ns > 0) { return 0 }
    return ns >= 9.2e18 ? Int64.max : Int64(ns)
}

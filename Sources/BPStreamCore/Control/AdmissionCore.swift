#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

// The storage class behind every rate controller and the limiter: one lock, one
// `AdmissionQueue`, the parked threads (one condition each, so a wake-up reaches exactly
// the waiter it is for) and the tickets of async waiters. Wake-ups are delivered after
// unlocking: signals to parked threads, notify callbacks to tickets (caller code, never
// under the lock).
//
// Time: the controller reads its clock under its lock. `SystemClock` and `ManualClock`
// take no lock to read; a clock of the caller's own must not block nor call into the
// controller from `now()`. Waiters on the system clock sleep until their due time or
// timeout; on a manual clock they sleep until its advance wakes them; on any other clock
// they look again every millisecond of real time.

/// How a ticket's poll ended.
public enum TicketPoll: Sendable, Equatable {
    /// The permits are taken: the ticket's holder owns them. Later polls say so again.
    case granted
    /// Not yet: the permits are due in this many clock nanoseconds (poll again then, or
    /// when notified).
    case retryAfter(Int64)
    /// Not yet: wait for the notification (not the head, or waiting for a slot).
    case waitForNotify
    /// The limit was lowered below the ticket's `n`: it can never be granted. It left the
    /// queue, taking nothing.
    case impossible
}

/// What a ticket needs of the controller it waits on.
protocol TicketHost: AnyObject, Sendable {
    func poll(_ ticket: AdmissionTicket) -> TicketPoll
    func release(_ ticket: AdmissionTicket, timedOut: Bool)
}

/// A place in a controller's (or limiter's) queue, for a waiter without a thread.
///
/// The holder polls; the controller calls the ticket's notify function (outside its lock,
/// on any thread) whenever a poll may now succeed or re-plan. Nothing is granted behind
/// the holder's back: the permits are taken by the poll that returns `.granted`.
///
/// - Important: call `release()` once the ticket is no longer wanted (granted or not):
///   an ungranted ticket left in the queue holds every waiter behind it.
public final class AdmissionTicket: @unchecked Sendable {
    enum Phase { case queued, granted, released }

    let host: any TicketHost
    let id: UInt64
    /// Guarded by the host's lock.
    var phase: Phase = .queued

    init(host: any TicketHost, id: UInt64) {
        self.host = host
        self.id = id
    }

    /// Tries to take the ticket's permits (see `TicketPoll`).
    public func poll() -> TicketPoll { host.poll(self) }

    /// Leaves the queue; an ungranted ticket takes nothing and counts as cancelled (or
    /// timed out). Releasing twice does nothing more. A granted ticket's permits stay taken.
    public func release(timedOut: Bool = false) { host.release(self, timedOut: timedOut) }
}

/// A ticket's notify callback, held by the controller while the ticket is queued and by
/// each delivery in flight (so whatever it captures outlives every call).
final class TicketNotifier: @unchecked Sendable {
    let notify: @Sendable () -> Void
    init(_ notify: @escaping @Sendable () -> Void) { self.notify = notify }
}

final class AdmissionCore<Policy: PermitPolicy>: ClockListener, TicketHost, @unchecked Sendable {
    enum ClockKind { case system, manual, other }

    private enum Wake {
        case thread(PthreadCondition)
        case ticket(TicketNotifier)
    }

    /// How often a waiter on a clock that can neither be timed nor heard looks again.
    static var foreignClockRecheck: Int64 { 1_000_000 }

    let lock = PthreadLock()
    let clock: any ControlClock
    let clockKind: ClockKind
    /// Guarded by `lock`.
    var queue: AdmissionQueue<Policy>
    /// Guarded by `lock`: the condition each parked thread sleeps on, by waiter id.
    private var parked: [UInt64: PthreadCondition] = [:]
    /// Guarded by `lock`: queued tickets' callbacks, by waiter id.
    private var tickets: [UInt64: TicketNotifier] = [:]

    init(policy: Policy, clock: any ControlClock) {
        self.queue = AdmissionQueue(policy: policy)
        self.clock = clock
        if clock === SystemClock.shared {
            clockKind = .system
        } else if let manual = clock as? ManualClock {
            clockKind = .manual
            manual.addListener(self)
        } else {
            clockKind = .other
        }
        ForkRegistry.register(
            ForkMember(lock: lock, conditions: []) { [unowned(unsafe) self] in
                // The parent's parked threads do not exist here; its tickets' holders may.
                self.queue.forget(Set(self.parked.keys))
                self.parked = [:]
            },
            for: ObjectIdentifier(self))
    }

    deinit { ForkRegistry.unregister(ObjectIdentifier(self)) }

    // MARK: - Changes

    /// Runs `body` on the queue under the lock at the clock's current time, then wakes
    /// whom the change concerns, after unlocking.
    func mutate<R>(_ body: (inout AdmissionQueue<Policy>, Int64) -> R) -> R {
        lock.lock()
        let now = clock.now()
        let result = body(&queue, now)
        let wakes = collectWakes(now: now, expired: false)
        lock.unlock()
        deliver(wakes)
        return result
    }

    /// Reads the queue under the lock at the clock's current time (time-driven state
    /// brought up to date first).
    func read<R>(_ body: (inout AdmissionQueue<Policy>, Int64) -> R) -> R {
        mutate(body)
    }

    func clockDidMove() {
        lock.lock()
        let now = clock.now()
        let wakes = collectWakes(now: now, expired: true)
        lock.unlock()
        deliver(wakes)
    }

    private func collectWakes(now: Int64, expired: Bool) -> [Wake] {
        let ids = queue.wakeList(now: now, expired: expired)
        if ids.isEmpty { return [] }
        return ids.compactMap { id in
            if let condition = parked[id] { return .thread(condition) }
            if let notifier = tickets[id] { return .ticket(notifier) }
            return nil
        }
    }

    private func deliver(_ wakes: [Wake]) {
        for wake in wakes {
            switch wake {
            case .thread(let condition): condition.signal()
            case .ticket(let notifier): notifier.notify()
            }
        }
    }

    // MARK: - Acquiring

    func tryAcquire(_ n: Int) -> AdmissionTry {
        lock.lock()
        let outcome = queue.tryAcquire(n, now: clock.now())
        lock.unlock()
        return outcome
    }

    /// Waits in line for `n` permits (see `RateController.acquire`). Timeouts are on the
    /// controller's clock; the observer is polled on real time.
    func acquire<Observer: WaitObserver>(
        _ n: Int, timeoutNanoseconds: Int64, observer: inout Observer
    ) -> RateAcquireOutcome {
        lock.lock()
        let start = clock.now()
        switch queue.tryAcquire(n, now: start, countRefusal: false) {
        case .granted: lock.unlock(); return .granted(waitedNanoseconds: 0)
        case .impossible: lock.unlock(); return .impossible
        case .refused: break
        }
        if timeoutNanoseconds == 0 {
            queue.counters.timedOut &+= 1
            lock.unlock()
            return .timedOut
        }
        let deadline = timeoutNanoseconds < 0 ? Int64.max : start.addingSaturated(timeoutNanoseconds)
        let id = queue.enqueue(n, now: start, deadline: deadline)
        let condition = PthreadCondition()
        parked[id] = condition
        lock.unlock()

        observer.willWait()
        let interval = observer.pollIntervalNanoseconds
        var nextPoll = interval > 0 ? MonotonicClock.now().addingSaturated(interval) : Int64.max
        lock.lock()
        var outcome: RateAcquireOutcome
        var slept = false
        waiting: while true {
            let now = clock.now()
            var dueAt = Int64.max
            switch queue.attempt(id, now: now, afterSleep: slept, canTime: clockKind != .other) {
            case .granted(let waited): outcome = .granted(waitedNanoseconds: waited); break waiting
            case .impossible, .unknown: outcome = .impossible; break waiting
            case .due(let at): dueAt = at
            case .behind(let until): dueAt = until ?? Int64.max
            case .waitingForEvent: break
            }
            if now >= deadline {
                queue.leave(id, timedOut: true)
                outcome = .timedOut
                break waiting
            }
            let realNow = MonotonicClock.now()
            if realNow >= nextPoll {
                lock.unlock()
                let cancel = observer.shouldCancel()
                lock.lock()
                if cancel, queue.leave(id, timedOut: false) {
                    outcome = .cancelled
                    break waiting
                }
                nextPoll = MonotonicClock.now().addingSaturated(interval)
                slept = false
                continue  // granted meanwhile? look again
            }
            var wakeAt = nextPoll
            switch clockKind {
            case .system: wakeAt = Swift.min(wakeAt, deadline, dueAt)  // one timeline
            case .manual: break  // the clock's advance wakes whoever is due
            case .other: wakeAt = Swift.min(wakeAt, realNow.addingSaturated(Self.foreignClockRecheck))
            }
            if wakeAt == Int64.max {
                condition.wait(lock)
            } else {
                condition.wait(lock, until: wakeAt)
            }
            slept = true
        }
        parked[id] = nil
        let wakes = collectWakes(now: clock.now(), expired: false)  // promote the next head
        lock.unlock()
        deliver(wakes)
        observer.didWait()
        return outcome
    }

    // MARK: - Tickets

    /// Joins the queue for `n` permits without a thread; nil when `n` can never be granted.
    func enqueue(_ n: Int, notify: @escaping @Sendable () -> Void) -> AdmissionTicket? {
        lock.lock()
        guard n >= 1, queue.policy.canEverGrant(n) else {
            lock.unlock()
            return nil
        }
        let id = queue.enqueue(n, now: clock.now())
        tickets[id] = TicketNotifier(notify)
        lock.unlock()
        return AdmissionTicket(host: self, id: id)
    }

    func poll(_ ticket: AdmissionTicket) -> TicketPoll {
        lock.lock()
        switch ticket.phase {
        case .granted: lock.unlock(); return .granted
        case .released: lock.unlock(); return .impossible
        case .queued: break
        }
        let now = clock.now()
        let result: TicketPoll
        switch queue.attempt(ticket.id, now: now) {
        case .granted:
            ticket.phase = .granted
            tickets[ticket.id] = nil
            result = .granted
        case .due(let at): result = .retryAfter(Swift.max(1, at - now))
        case .waitingForEvent, .behind: result = .waitForNotify
        case .impossible, .unknown:
            ticket.phase = .released
            tickets[ticket.id] = nil
            result = .impossible
        }
        let wakes = collectWakes(now: now, expired: false)
        lock.unlock()
        deliver(wakes)
        return result
    }

    func release(_ ticket: AdmissionTicket, timedOut: Bool) {
        lock.lock()
        guard ticket.phase == .queued else {
            ticket.phase = .released
            lock.unlock()
            return
        }
        ticket.phase = .released
        queue.leave(ticket.id, timedOut: timedOut)
        let notifier = tickets.removeValue(forKey: ticket.id)
        let wakes = collectWakes(now: clock.now(), expired: false)
        lock.unlock()
        deliver(wakes)
        withExtendedLifetime(notifier) {}  // its captures are freed here, outside the lock
    }

    // MARK: - Reading

    /// Clock nanoseconds until `n` permits would be there if nobody waited: 0 now, nil
    /// only an event can bring them (or never: check `canEverGrant`).
    func retryAfter(_ n: Int) -> Int64? {
        lock.lock()
        defer { lock.unlock() }
        let now = clock.now()
        queue.policy.advance(to: now)
        return queue.policy.delay(for: n, now: now)
    }

    func canEverGrant(_ n: Int) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        return n >= 1 && queue.policy.canEverGrant(n)
    }
}

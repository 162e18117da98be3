// The FIFO of waiters every rate controller and the limiter share, as a pure value: no
// lock, no threads, no clock of its own (every call is told what time it is). The
// storage class (`AdmissionCore`) owns the lock and the parked threads and acts on the
// wake-ups this value asks for.
//
// Rules it keeps:
// - no barging: `tryAcquire` refuses while anyone waits;
// - first come, first served: only the head may be granted; it takes its permits itself
//   (a waiter is woken, never handed permits, so one that gives up takes nothing);
// - one wake-up per grant: the head waits for its due time (`plannedAt`); a thread behind
//   it waits either for an event (woken when it becomes the head) or, when the policy can
//   tell (a bucket: the permits of everyone ahead, then its own), until the time its turn
//   is due, so the grant before it need not wake it: it wakes once, at its time, and is
//   granted. A change that makes the head due clearly earlier than it planned (a rate
//   raised, a clock moved, a slot freed, a waiter ahead gone) wakes it to re-plan.

/// The permit arithmetic of one controller: how many permits there are and when more come.
/// A pure value; `AdmissionQueue` asks it, the storage class guards it.
protocol PermitPolicy {
    /// Whether `n` permits can ever be granted at once (at most a bucket's burst, ...).
    func canEverGrant(_ n: Int) -> Bool
    /// Clock nanoseconds until `n` permits are there: 0 now, > 0 that long, nil: time
    /// alone will not bring them (a slot must be released), or never (`canEverGrant`).
    func delay(for n: Int, now: Int64) -> Int64?
    /// Takes `n` permits; called only when `delay(for: n, now: now) == 0`. `now` may be a
    /// waiter's due time, a little before the clock's time (never before its last look).
    mutating func take(_ n: Int, now: Int64)
    /// Brings time-driven state up to `now` (AIMD's windows); called before every decision.
    mutating func advance(to now: Int64)
    /// Clock nanoseconds until `demand` permits (a waiter's own plus those of everyone
    /// ahead of it) will have come, if nothing changes; nil when time cannot tell.
    func estimatedDelay(forQueued demand: Int, now: Int64) -> Int64?
}

extension PermitPolicy {
    mutating func advance(to now: Int64) {}
    func estimatedDelay(forQueued demand: Int, now: Int64) -> Int64? { nil }
}

/// How a non-waiting attempt ended.
public enum AdmissionTry: Sendable, Equatable {
    /// The permits are the caller's.
    case granted
    /// Not now (or someone waits); nothing was taken.
    case refused
    /// `n` can never be granted; nothing was taken.
    case impossible
}

/// Counters every controller and the limiter keep.
public struct AdmissionCounters: Sendable, Equatable {
    /// Grants (one per successful call, whatever its `n`).
    public var granted: UInt64 = 0
    /// `tryAcquire` refusals.
    public var refused: UInt64 = 0
    /// Waits whose timeout passed (tickets released as timed out included).
    public var timedOut: UInt64 = 0
    /// Waits cancelled (by a wait observer, or tickets released ungranted).
    public var cancelled: UInt64 = 0
    /// Total clock nanoseconds granted waiters waited.
    public var waitNanoseconds: UInt64 = 0
    /// Times a waiter was woken to act: a signal or notification, or a head's own grant
    /// time passing. Observer polls are not counted.
    public var wakeups: UInt64 = 0

    public init() {}
}

/// The queue of waiters in front of a `PermitPolicy`.
struct AdmissionQueue<Policy: PermitPolicy> {
    struct Waiter {
        let id: UInt64
        let n: Int
        /// Clock time the wait began.
        let enqueuedAt: Int64
        /// Clock time its timeout passes (`Int64.max`: none).
        let deadline: Int64
        /// Woken (signalled or notified) and has not looked yet: no second wake-up.
        var wakePending = false
        /// Clock time the head waits until (nil: it waits for an event).
        var plannedAt: Int64? = nil
    }

    /// How a waiter's look at the queue ended.
    enum Attempt: Equatable {
        /// Granted and out of the queue; it waited this long.
        case granted(waited: Int64)
        /// The head; its permits are due at this clock time.
        case due(at: Int64)
        /// The head; only an event (a released slot, a raised limit) can grant it.
        case waitingForEvent
        /// Not the head: wait to be promoted, or (threads) until this clock time, when its
        /// turn is due if nothing changes (nil: only promotion tells).
        case behind(until: Int64?)
        /// Its `n` can no longer be granted (the limit was lowered); out of the queue.
        case impossible
        /// Not in the queue (already granted or gone).
        case unknown
    }

    /// A head due less than this much earlier than it planned is not woken to re-plan.
    static var replanSlack: Int64 { 1_000 }

    var policy: Policy
    var counters = AdmissionCounters()
    /// Arrival order; index 0 is the head.
    private(set) var waiters: [Waiter] = []
    private var nextID: UInt64 = 1

    init(policy: Policy) {
        self.policy = policy
    }

    var waitingCount: Int { waiters.count }

    /// Takes `n` permits if they are there and nobody waits. `countRefusal`: a refusal is
    /// a `tryAcquire` refusal (not the first look of a blocking acquire).
    mutating func tryAcquire(_ n: Int, now: Int64, countRefusal: Bool = true) -> AdmissionTry {
        guard n >= 1, policy.canEverGrant(n) else { return .impossible }
        policy.advance(to: now)
        if waiters.isEmpty, policy.delay(for: n, now: now) == 0 {
            policy.take(n, now: now)
            counters.granted &+= 1
            return .granted
        }
        if countRefusal { counters.refused &+= 1 }
        return .refused
    }

    /// Joins the end of the queue; returns the waiter's id.
    mutating func enqueue(_ n: Int, now: Int64, deadline: Int64 = .max) -> UInt64 {
        let id = nextID
        nextID &+= 1
        waiters.append(Waiter(id: id, n: n, enqueuedAt: now, deadline: deadline))
        return id
    }

    /// The waiter `id` looks: the head takes its permits when they are there. `afterSleep`:
    /// it slept since its last look (a wake-up is counted if it was woken or its time came).
    /// `canTime`: a waiter behind the head can sleep until a time (a thread on a timed
    /// clock); else it waits to be promoted.
    mutating func attempt(
        _ id: UInt64, now: Int64, afterSleep: Bool = false, canTime: Bool = false
    ) -> Attempt {
        guard let index = waiters.firstIndex(where: { $0.id == id }) else { return .unknown }
        let wasWoken = waiters[index].wakePending
        waiters[index].wakePending = false
        if afterSleep, !wasWoken, let planned = waiters[index].plannedAt, now >= planned {
            counters.wakeups &+= 1  // its own grant time: the one wake-up of a timed head
        }
        guard index == 0 else {
            var until: Int64? = nil
            if canTime {
                policy.advance(to: now)
                var demand = 0
                for ahead in waiters[...index] { demand += ahead.n }
                if let delay = policy.estimatedDelay(forQueued: demand, now: now), delay > 0 {
                    until = now.addingSaturated(delay)  // else due already: wait for its turn
                }
            }
            waiters[index].plannedAt = until
            return .behind(until: until)
        }
        let head = waiters[0]
        guard policy.canEverGrant(head.n) else {
            waiters.removeFirst()
            counters.cancelled &+= 1
            return .impossible
        }
        policy.advance(to: now)
        switch policy.delay(for: head.n, now: now) {
        case 0?:
            // Dated at its due time when it was due before this look: a head that wakes a
            // little late (the scheduler) then costs the waiters behind it nothing (a
            // bucket would otherwise lose the tokens its cap turned away meanwhile).
            var grantAt = now
            if let planned = head.plannedAt, planned < now, policy.delay(for: head.n, now: planned) == 0 {
                grantAt = planned
            }
            policy.take(head.n, now: grantAt)
            waiters.removeFirst()
            let waited = Swift.max(0, now - head.enqueuedAt)
            counters.granted &+= 1
            counters.waitNanoseconds &+= UInt64(waited)
            return .granted(waited: waited)
        case let delay?:
            let at = now.addingSaturated(delay)
            waiters[0].plannedAt = at
            return .due(at: at)
        case nil:
            waiters[0].plannedAt = nil
            return .waitingForEvent
        }
    }

    /// Where a ticket stands, without taking anything: for `retryAfter` of the head.
    func isHead(_ id: UInt64) -> Bool { waiters.first?.id == id }

    /// The waiter leaves without its permits. Returns false if it was not in the queue.
    @discardableResult
    mutating func leave(_ id: UInt64, timedOut: Bool) -> Bool {
        guard let index = waiters.firstIndex(where: { $0.id == id }) else { return false }
        waiters.remove(at: index)
        if timedOut { counters.timedOut &+= 1 } else { counters.cancelled &+= 1 }
        return true
    }

    /// The waiters to wake after a change (a grant, a departure, a new rate or limit, a
    /// released slot, a moved clock), marked as woken: the head when it is due now, due
    /// earlier than it planned, newly the head and due by time, or can never be granted.
    /// `expired`: also every waiter whose timeout passed (a clock that moved: waiters on a
    /// manual clock cannot time their own timeout).
    mutating func wakeList(now: Int64, expired: Bool = false) -> [UInt64] {
        var ids: [UInt64] = []
        if let head = waiters.first, !head.wakePending {
            let wake: Bool
            if !policy.canEverGrant(head.n) {
                wake = true
            } else {
                policy.advance(to: now)
                switch policy.delay(for: head.n, now: now) {
                case 0?: wake = true
                case let delay?:
                    // Re-planned only when due clearly earlier: float rounding moves `at`
                    // by a nanosecond or so between looks, and a read is no reason to wake.
                    let at = now.addingSaturated(delay)
                    wake = head.plannedAt.map { $0 > at.addingSaturated(Self.replanSlack) } ?? true
                case nil: wake = false
                }
            }
            if wake {
                waiters[0].wakePending = true
                ids.append(head.id)
            }
        }
        if expired {
            for index in waiters.indices.dropFirst() where !waiters[index].wakePending
                && waiters[index].deadline <= now {
                waiters[index].wakePending = true
                ids.append(waiters[index].id)
            }
            if let head = waiters.first, !head.wakePending, head.deadline <= now {
                waiters[0].wakePending = true
                ids.append(head.id)
            }
        }
        counters.wakeups &+= UInt64(ids.count)
        return ids
    }

    /// In a forked child: the waiters `ids` (threads of the parent) are gone.
    mutating func forget(_ ids: Set<UInt64>) {
        waiters.removeAll { ids.contains($0.id) }
    }
}

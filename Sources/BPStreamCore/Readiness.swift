/// What a waiter that must not block a thread (an async task, an event loop) waits for.
///
/// A stream is `readable` when a get would not wait (an item is buffered, or the stream is
/// closed: the get reports that), and `writable` when a put would not wait (room, or closed).
public struct Readiness: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    @inlinable public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// An item to get, or the stream is closed.
    public static let readable = Readiness(rawValue: 1)
    /// Room for a put, or the stream is closed.
    public static let writable = Readiness(rawValue: 2)
    /// The stream is closed (reported together with readable and writable).
    public static let closed = Readiness(rawValue: 4)
    /// No unfinished tasks (`join` would not wait): every item put was marked done,
    /// evicted, cleared or discarded. A close alone does not make it true, and never
    /// fires it: closing finishes no task (an immediate close's discards may).
    public static let tasksDone = Readiness(rawValue: 8)
}

/// A registration for readiness notifications on one stream (`BoundedStream.watch`).
///
/// The protocol (a one-shot edge, re-armed by the waiter):
/// 1. the waiter tries its non-blocking call; it would wait;
/// 2. it calls `BoundedStream.arm(_:for:)`: if what it waits for already holds, arm
///    returns it and arms nothing (go to 1); otherwise the watch is armed;
/// 3. the first transition that makes an armed readiness true disarms the watch for it and
///    calls `notify` once with what became true (what else it is armed for stays armed), OUTSIDE the stream's lock, on the thread that
///    made the transition (a producer or consumer of any kind: it may hold no runtime lock,
///    so `notify` must only hand the news on, e.g. write to an event loop's eventfd);
/// 4. the woken waiter retries its non-blocking call (1). It is never handed an item: so a
///    waiter cancelled after its wake-up takes nothing, and whoever retries gets it.
///
/// A stream with no armed watch pays one integer test per transition.
public final class StreamWatch: @unchecked Sendable {
    /// Called with what became true; see the protocol above.
    @usableFromInline let notify: @Sendable (Readiness) -> Void
    /// Guarded by the stream's lock.
    @usableFromInline var armed: Readiness = []
    /// Guarded by the stream's lock: false once unwatched (arming it then does nothing).
    @usableFromInline var isWatching = true

    @usableFromInline
    init(notify: @escaping @Sendable (Readiness) -> Void) {
        self.notify = notify
    }
}

/// The watches of one stream and what they are armed for: guarded by the stream's lock.
@usableFromInline
struct Watches {
    @usableFromInline var all: [StreamWatch] = []
    /// How many watches are armed for each readiness: a transition tests these, nothing more.
    @usableFromInline var armedReadable = 0
    @usableFromInline var armedWritable = 0
    @usableFromInline var armedTasksDone = 0
    /// What transitions since the lock was taken made true, for armed watches only.
    @usableFromInline var pending: Readiness = []

    @usableFromInline init() {}

    /// A transition made an item available.
    @inlinable @inline(__always)
    mutating func itemsAppeared() {
        if armedReadable != 0 { pending.insert(.readable) }
    }

    /// A transition freed room.
    @inlinable @inline(__always)
    mutating func roomAppeared() {
        if armedWritable != 0 { pending.insert(.writable) }
    }

    /// Unfinished tasks may have reached zero (a task done, or items discarded): called
    /// with the count after the transition. Not on the put paths: a put that evicts or
    /// clears stores an unfinished item, so it never leaves zero.
    @inlinable @inline(__always)
    mutating func tasksFinished(unfinished: UInt64) {
        if armedTasksDone != 0 && unfinished == 0 { pending.insert(.tasksDone) }
    }

    /// The stream closed: every watch armed for an item or room is due, for all it waits
    /// for (not for `tasksDone`: closing finishes no task).
    @inlinable
    mutating func closed() {
        if armedReadable != 0 || armedWritable != 0 { pending.formUnion([.readable, .writable, .closed]) }
    }

    @usableFromInline
    mutating func arm(_ watch: StreamWatch, for events: Readiness) {
        let added = events.subtracting(watch.armed)
        if added.contains(.readable) { armedReadable += 1 }
        if added.contains(.writable) { armedWritable += 1 }
        if added.contains(.tasksDone) { armedTasksDone += 1 }
        watch.armed.formUnion(events)
    }

    /// Disarms `watch` for `events` (all it is armed for by default).
    @usableFromInline
    mutating func disarm(_ watch: StreamWatch, for events: Readiness = [.readable, .writable, .tasksDone]) {
        let removed = watch.armed.intersection(events)
        if removed.contains(.readable) { armedReadable -= 1 }
        if removed.contains(.writable) { armedWritable -= 1 }
        if removed.contains(.tasksDone) { armedTasksDone -= 1 }
        watch.armed.subtract(removed)
    }

    /// Disarms the watches `pending` concerns and returns them with what to tell each;
    /// nil (the usual case) when nothing is pending.
    @inlinable @inline(__always)
    mutating func takeDue() -> [(StreamWatch, Readiness)]? {
        if pending.isEmpty { return nil }
        return collectDue()
    }

    @usableFromInline
    mutating func collectDue() -> [(StreamWatch, Readiness)]? {
        let events = pending
        pending = []
        var due: [(StreamWatch, Readiness)] = []
        for watch in all {
            var fired = watch.armed.intersection(events.subtracting(.closed))
            if events.contains(.closed) {
                let waiting = watch.armed.subtracting(.tasksDone)  // a close finishes no task
                if !waiting.isEmpty { fired.formUnion(waiting.union(.closed)) }
            }
            if fired.isEmpty { continue }
            disarm(watch, for: fired)  // what did not fire stays armed
            due.append((watch, fired))
        }
        return due.isEmpty ? nil : due
    }
}

extension Optional where Wrapped == [(StreamWatch, Readiness)] {
    /// Calls each due watch's `notify` (after the lock was released).
    @inlinable
    func deliver() {
        guard let due = self else { return }
        for (watch, events) in due { watch.notify(events) }
    }
}

extension StreamStateMachine.PutAction {
    /// Whether the put stored its item (and so made one available).
    @inlinable
    var stores: Bool {
        switch self {
        case .stored, .storedEvicting, .storedClearing: return true
        case .shed, .mustWait, .rejected, .closed, .noMemory: return false
        }
    }
}

// MARK: - Accounting for async waiters

/// An async waiter's wait, as the stats count it. A thread's wait is counted by the
/// blocking call itself (`park`); an async waiter waits between calls, so it reports.
public enum AsyncWait: Sendable {
    /// A put found no room and will wait: a producer wait and a backpressure event.
    case putWaits
    /// That put's wait ended (stored, closed or cancelled) after `nanoseconds`.
    case putWaited(nanoseconds: Int64)
    /// That put's timeout passed after `nanoseconds`: counted as rejected, as a thread's.
    case putGaveUp(nanoseconds: Int64)
    /// A get found no item and will wait: a consumer wait.
    case getWaits
    /// That get's wait ended after `nanoseconds`.
    case getWaited(nanoseconds: Int64)
}

extension StreamStateMachine {
    /// Counts an async wait the way a thread's is counted (the same methods).
    @usableFromInline
    mutating func account(_ wait: AsyncWait) {
        switch wait {
        case .putWaits: producerWillAwait()
        case .putWaited(let ns): producerDidAwait(nanoseconds: ns)
        case .putGaveUp(let ns): producerDidAwait(nanoseconds: ns); producerGaveUp()
        case .getWaits: consumerWillAwait()
        case .getWaited(let ns): consumerDidAwait(nanoseconds: ns)
        }
    }
}

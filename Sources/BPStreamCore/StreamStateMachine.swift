/// The stream's state and every transition, with no lock and no threads.
///
/// `BoundedStream` owns one of these behind its lock and turns each transition's returned
/// action into effects (signals, releasing dropped items) AFTER unlocking. Keeping the
/// machine pure lets the tests drive every transition without threads.
///
/// Invariants (hold between any two transitions):
/// - `depth == buffer.count + reserved`: reserved items (taken by `reserve`, not yet
///   `settle`d) still count in the depth and against the capacity.
/// - `buffer.capacity >= depth` (unless `discardsBacklog`): every store makes the ring big
///   enough for the whole depth, so reserved items handed back (`settle`) always fit and
///   the only transitions that can run out of memory are puts, which report it
///   (`PutAction.noMemory`) and change nothing.
/// - `counters.produced == counters.consumed + counters.dropped + depth`
/// - `depth <= capacity`, except after `setCapacity` shrank below the depth: then
///   nothing is added until the depth falls under the new capacity (drop policies evict or
///   shed one item per put instead), so the excess only ever shrinks.
/// - Once `isClosed`, it stays closed and `put` stores nothing.
/// - `waiting*` count threads parked on the matching condition, so a transition only asks
///   for a wake-up when someone can hear it.
@usableFromInline
struct StreamStateMachine<Element> {
    /// Buffered items, oldest first. Owned by this machine alone (a reference: copying a
    /// machine would share it; nothing does).
    @usableFromInline var buffer = RingBuffer<Element>()
    /// The bound; `Int.max` means unbounded.
    @usableFromInline var capacity: Int
    @usableFromInline let policy: OverflowPolicy
    /// Closed streams accept no puts; gets drain what is left, then report `closed`.
    @usableFromInline var isClosed = false
    /// Set when the close that closed the stream carried a producer's error; gets report it
    /// (instead of a plain `closed`) once drained.
    @usableFromInline var failure: ProducerFailure? = nil
    /// Set by an immediate close: the backlog was discarded, and reserved items handed
    /// back later (`settle`) are discarded too.
    @usableFromInline var discardsBacklog = false
    /// Items a consumer took with `reserve` and has not yet `settle`d: out of the buffer,
    /// but still part of the depth, so they hold their room until delivered.
    @usableFromInline var reserved = 0

    /// How many published deliveries a put on a full stream absorbs at once (see
    /// `BoundedStream.absorbDeliveries`): an eighth of the capacity, at most 32.
    @inlinable
    var absorbThreshold: Int { capacity == Int.max ? 1 : Swift.max(1, Swift.min(32, capacity / 8)) }

    /// Items in the stream: buffered, plus reserved by a consumer and not yet delivered.
    @inlinable
    var depth: Int { buffer.count &+ reserved }
    /// Every counter of the snapshot except depth, capacity and rates (derived on demand).
    @usableFromInline var counters = StreamStats()
    /// Threads parked waiting for room / for an item / for unfinished tasks to reach 0.
    @usableFromInline var waitingProducers = 0
    /// Of those, producers asleep on their recheck timer while reservations are out (see
    /// `BoundedStream.park`): they find published room on their own within a recheck, the
    /// longest of which is `longestRecheck` (0 while none sleeps so).
    @usableFromInline var recheckingProducers = 0
    @usableFromInline var longestRecheck: Int64 = 0
    /// The last reservation (when, how many items) and the consumer's pace it revealed: the
    /// time between two reservations per item of the first (0 until known).
    @usableFromInline var lastReservation: (time: Int64, count: Int) = (0, 0)
    @usableFromInline var nanosecondsPerReservedItem: Int64 = 0
    @usableFromInline var waitingConsumers = 0
    @usableFromInline var waitingJoiners = 0
    @usableFromInline var rate: RateWindow

    // MARK: flow state (see Flow.swift)

    /// The flow state of the depth this machine sees, updated by every transition that
    /// changes the depth or the capacity (`flowCheck`). Classified with the default marks
    /// when flow control is off: then it is only reported.
    @usableFromInline var flow: FlowMonitor
    /// Whether puts that may wait are delayed or paused by the flow state (`flow:` given).
    @usableFromInline let flowGatesPuts: Bool
    /// The time base of the flow accounting (`timePaused`): read only when the state changes
    /// and at snapshots, so this machine stays a pure function of its inputs for a manual clock.
    @usableFromInline let flowClock: any ControlClock
    /// `flowGatesPuts && flow.state != .normal`: the one test a put's hot path makes.
    @usableFromInline var putsMustPassFlowGate = false
    /// Something for the lock holder to do once unlocked (`BoundedStream.unlock`): flow
    /// transitions to deliver, paused puts to wake, the absorb request to update.
    @usableFromInline var flowPending = false
    /// Transitions not yet delivered to listeners, oldest first (kept only while any listen).
    @usableFromInline var flowTransitions: [FlowTransition] = []
    /// Registered flow listeners (transitions are queued only while this is nonzero).
    @usableFromInline var flowListeners = 0
    /// Puts waiting in the flow gate (a pause or a throttle delay): they wait on their own
    /// condition, woken when the state falls below PAUSED and on close.
    @usableFromInline var flowWaiters = 0
    /// The state fell below PAUSED while puts waited for it: broadcast once unlocked.
    @usableFromInline var flowWakeWaiters = false
    /// Entries into PAUSED or DROPPING not yet reported to an adaptive rate (after unlock).
    @usableFromInline var flowPausesToReport = 0

    /// - Parameters:
    ///   - capacity: `1...StreamLimits.maximumCapacity`, or `nil` for unbounded.
    ///   - flow: the flow marks; `nil`: the default marks, reported only, no put gated.
    ///   - clock: the time base of the flow accounting.
    @usableFromInline
    init(capacity: Int?, policy: OverflowPolicy, now: Int64, flow: FlowControl? = nil,
         clock: any ControlClock = SystemClock.shared) {
        self.capacity = capacity ?? Int.max
        self.policy = policy
        // The ring grows on demand (and may fail to): a large bound costs nothing until used.
        self.rate = RateWindow(now: now)
        self.flow = FlowMonitor(control: flow ?? .default, capacity: capacity, now: clock.now())
        self.flowGatesPuts = flow != nil
        self.flowClock = clock
    }

    /// Updates the flow state after a depth change: two integer compares unless it changes.
    @inlinable @inline(__always)
    mutating func flowCheck() {
        if flow.mayChange(depth: depth) { flowChanged(flow.observe(depth: depth, now: flowClock.now())) }
    }

    /// Records a flow transition (if any) for the lock holder to act on once unlocked.
    @usableFromInline
    mutating func flowChanged(_ transition: FlowTransition?) {
        guard let transition else { return }
        putsMustPassFlowGate = flowGatesPuts && flow.state != .normal
        if flowListeners > 0 { flowTransitions.append(transition) }
        if transition.old >= .paused && transition.new < .paused && flowWaiters > 0 { flowWakeWaiters = true }
        if transition.old < .paused && transition.new >= .paused { flowPausesToReport += 1 }
        flowPending = true
    }

    // MARK: put

    /// What the lock holder does after a put, once unlocked.
    @usableFromInline
    enum PutAction {
        /// Stored; signal one waiting consumer if `wakeConsumer`.
        case stored(wakeConsumer: Bool)
        /// Stored after evicting the oldest item (`dropOldest`): release that one.
        case storedEvicting(Element, wakeJoiners: Bool)
        /// Stored after clearing the backlog (`dropAll`): release every cleared item.
        case storedClearing(RingBuffer<Element>, wakeJoiners: Bool)
        /// Counted as produced and shed (`dropNewest`); the caller keeps the item.
        case shed
        /// Full under `block`: wait for room, then call `put` again, or give up.
        case mustWait
        /// Full under `reject`: counted as rejected; the caller keeps the item.
        case rejected
        /// The stream is closed; nothing counted; the caller keeps the item.
        case closed
        /// The buffer could not grow to hold the item (malloc failed); nothing changed or
        /// counted; the caller keeps the item.
        case noMemory
    }

    /// The hot path of `put`, small enough to inline into the caller: stores `item` if
    /// the stream is open and below capacity, and returns whether it did. When it returns
    /// `false` nothing changed and the full `put` decides.
    @inlinable @inline(__always)
    mutating func storeIfRoom(_ item: Element) -> Bool {
        guard !isClosed, buffer.count &+ reserved < capacity else { return false }
        return store(item)
    }

    /// The hot path of a batch put: stores the longest prefix of `items` that fits without
    /// waiting or dropping, in one step, and returns its length (0: closed or full, nothing
    /// changed, and `put` decides for the next item).
    @inlinable
    mutating func storeIfRoom<Items: Collection>(contentsOf items: Items) -> Int
    where Items.Element == Element {
        guard !isClosed else { return 0 }
        var count = Swift.min(capacity &- depth, items.count)
        guard count > 0 else { return 0 }
        if !buffer.reserve(depth &+ count, limit: capacity) {
            // Out of memory for all of them: store what fits in the ring as it is.
            count = Swift.max(buffer.capacity &- depth, 0)
            guard count > 0 else { return 0 }
        }
        buffer.appendAssumingRoom(contentsOf: items.prefix(count))
        recordStored(count)
        return count
    }

    /// The hot path of `get`: takes the oldest item if there is one. When it returns `nil`
    /// nothing changed and the full `get` decides.
    @inlinable @inline(__always)
    mutating func takeIfAny() -> Element? {
        guard let item = buffer.popFirst() else { return nil }
        counters.consumed &+= 1
        rate.tick(produced: counters.produced, consumed: counters.consumed, dropped: counters.dropped)
        flowCheck()
        return item
    }

    /// How often a producer parked while reservations are out looks again for room that
    /// deliveries published without a signal (`BoundedStream.park`), at first; it backs
    /// off to `reservedRecheckLimit` while it finds none.
    public static var reservedRecheck: Int64 { 100_000 }
    public static var reservedRecheckLimit: Int64 { 1_000_000 }

    /// Whether producers asleep on their recheck timer can be left to it: the buffer holds
    /// what the consumer needs, at its recent pace, for two of their rechecks (and at least
    /// one item), so they refill it in time, and the consumer is spared the system call a
    /// wake-up costs (a slow consumer's producer sleeps on its timer; a fast one's is woken
    /// as before). The pace is the last one seen, idle time included: a consumer that was
    /// idle and is fast again may find a producer up to one recheck (at most
    /// `reservedRecheckLimit`) late, with items still there for it meanwhile.
    @inlinable
    var rechecksKeepUp: Bool {
        let pace = nanosecondsPerReservedItem
        guard pace > 0, !buffer.isEmpty else { return false }
        let needed = (2 * longestRecheck + pace - 1) / pace  // rounded up: at least 1
        return Int64(buffer.count) >= needed
    }

    /// Whether a transition that makes room or hands out reservations must signal producers.
    @inlinable
    var producersNeedWaking: Bool {
        waitingProducers > recheckingProducers || (waitingProducers > 0 && !rechecksKeepUp)
    }

    /// Whether a parked producer should be woken now (someone waits, and there is room).
    @inlinable @inline(__always)
    var producerCanProceed: Bool { waitingProducers > 0 && depth < capacity }

    @inlinable
    mutating func put(_ item: Element) -> PutAction {
        if isClosed { return .closed }
        if depth < capacity {
            guard store(item) else { return .noMemory }
            return .stored(wakeConsumer: waitingConsumers > 0)
        }
        switch policy {
        case .block:
            return .mustWait
        case .reject:
            counters.rejected &+= 1
            return .rejected
        case .dropNewest:
            recordShed(1)
            return .shed
        case .dropOldest where buffer.isEmpty, .dropAll where buffer.isEmpty:
            // Everything is reserved by a consumer: nothing can be evicted, so the new
            // item is shed rather than overfill the stream.
            recordShed(1)
            return .shed
        case .dropOldest:
            let evicted = buffer.popFirst().unsafelyUnwrapped  // not empty: checked above
            counters.droppedEvicted &+= 1
            counters.backpressureEvents &+= 1
            let wakeJoiners = finishTasks(1)
            let stored = store(item)  // into the evicted item's slot: never allocates
            assert(stored)
            return .storedEvicting(evicted, wakeJoiners: wakeJoiners)
        case .dropAll:
            // The backlog leaves in O(1) with its storage; the ring starts afresh, with room
            // for the reserved items and the new one allocated before anything changes.
            guard let cleared = buffer.takeAll(keepingRoomFor: reserved &+ 1, limit: capacity)
            else { return .noMemory }
            counters.droppedCleared &+= UInt64(cleared.count)
            counters.backpressureEvents &+= 1
            let wakeJoiners = finishTasks(UInt64(cleared.count))
            let stored = store(item)
            assert(stored)
            return .storedClearing(cleared, wakeJoiners: wakeJoiners)
        }
    }

    /// Counts `count` items as produced and shed (a backpressure event each).
    @inlinable
    mutating func recordShed(_ count: Int) {
        counters.produced &+= UInt64(count)
        counters.droppedShed &+= UInt64(count)
        counters.backpressureEvents &+= UInt64(count)
        rate.tick(produced: counters.produced, consumed: counters.consumed, dropped: counters.dropped)
    }

    /// Stores `item`, growing the ring to hold the whole depth (see the invariants);
    /// false, with nothing changed, when it cannot grow.
    @inlinable @inline(__always)
    mutating func store(_ item: Element) -> Bool {
        guard buffer.reserve(depth &+ 1, limit: capacity) else { return false }
        buffer.appendAssumingRoom(item)
        recordStored(1)
        return true
    }

    /// Counts `count` items just appended to the buffer: produced, unfinished, peak, rate.
    @inlinable @inline(__always)
    mutating func recordStored(_ count: Int) {
        counters.produced &+= UInt64(count)
        counters.unfinishedTasks &+= UInt64(count)
        let depth = UInt64(self.depth)
        if depth > counters.peakDepth { counters.peakDepth = depth }
        rate.tick(produced: counters.produced, consumed: counters.consumed, dropped: counters.dropped)
        flowCheck()
    }

    /// A put that got `.mustWait` is about to park.
    @inlinable
    mutating func producerWillWait() {
        waitingProducers += 1
        producerWillAwait()
    }

    /// A parked put woke for good (stored, closed, timed out or cancelled).
    @inlinable
    mutating func producerDidWait(nanoseconds: Int64) {
        waitingProducers -= 1
        producerDidAwait(nanoseconds: nanoseconds)
    }

    /// An async put that got `.mustWait` will suspend its task: a wait, counted as a
    /// parked one is, but not in `waitingProducers` (no thread to signal).
    @inlinable
    mutating func producerWillAwait() {
        counters.producerWaits &+= 1
        counters.backpressureEvents &+= 1
    }

    /// That async put's wait ended, however it ended.
    @inlinable
    mutating func producerDidAwait(nanoseconds: Int64) {
        counters.producerWaitNanoseconds &+= UInt64(Swift.max(nanoseconds, 0))
    }

    /// A put that got `.mustWait` gives up (timeout, or it was not allowed to wait).
    @inlinable
    mutating func producerGaveUp() {
        counters.rejected &+= 1
    }

    // MARK: get

    @usableFromInline
    enum GetAction {
        /// Took the oldest item; signal one waiting producer if `wakeProducer`.
        case item(Element, wakeProducer: Bool)
        /// Empty and open: wait for an item, then call `get` again, or give up.
        case mustWait
        /// Closed and drained; with the producer's error if it closed with one.
        case closed(ProducerFailure?)
    }

    @inlinable
    mutating func get() -> GetAction {
        guard let item = buffer.popFirst() else {
            return isClosed ? .closed(failure) : .mustWait
        }
        counters.consumed &+= 1
        rate.tick(produced: counters.produced, consumed: counters.consumed, dropped: counters.dropped)
        flowCheck()
        return .item(item, wakeProducer: producerCanProceed)
    }

    @usableFromInline
    enum TakeAction {
        /// Took `count >= 1` items; wake waiting producers if `wakeProducers`.
        case took(count: Int, wakeProducers: Bool)
        case mustWait
        case closed(ProducerFailure?)
    }

    /// Takes up to `target.count` items, oldest first, moving them into `target[0..<count]`
    /// in one bulk copy (no per-item work under the stream's lock).
    ///
    /// With `reserving`, the items leave the buffer but stay in the depth (and hold their
    /// room) as `reserved` until `settle` says how many were delivered: a consumer can take
    /// a batch in one lock without the stream ever holding more than its capacity.
    ///
    /// - Parameter now: the monotonic time, for the consumer's pace (reservations only).
    @inlinable
    mutating func take(
        into target: UnsafeMutableBufferPointer<Element>, reserving: Bool = false, now: Int64 = 0
    ) -> TakeAction {
        // A reservation never passes over consumers parked for an item: with any waiting,
        // it takes one item, like a get, and leaves the rest to them.
        let limit = reserving && waitingConsumers > 0 ? 1 : target.count
        let count = Swift.min(limit, buffer.count)
        if count == 0 { return isClosed ? .closed(failure) : .mustWait }
        // Moves the first `count` out (one bitwise copy per segment of the ring, no retain
        // or release), then moves the head.
        buffer.moveFirst(count, to: target)
        if reserving {
            if lastReservation.count > 0, now > lastReservation.time {
                nanosecondsPerReservedItem = (now - lastReservation.time) / Int64(lastReservation.count)
            }
            lastReservation = (now, count)
            reserved &+= count
            // No room is freed yet, but parked producers must learn that reservations are
            // out: deliveries are published without a signal, so they start looking again
            // every so often (BoundedStream.park).
            return .took(count: count, wakeProducers: producersNeedWaking)
        }
        counters.consumed &+= UInt64(count)
        rate.tick(produced: counters.produced, consumed: counters.consumed, dropped: counters.dropped)
        flowCheck()
        return .took(count: count, wakeProducers: producerCanProceed)
    }

    @inlinable
    mutating func consumerWillWait() {
        waitingConsumers += 1
        consumerWillAwait()
    }

    @inlinable
    mutating func consumerDidWait(nanoseconds: Int64) {
        waitingConsumers -= 1
        consumerDidAwait(nanoseconds: nanoseconds)
    }

    /// An async get will suspend its task: counted as a wait, not in `waitingConsumers`.
    @inlinable
    mutating func consumerWillAwait() {
        counters.consumerWaits &+= 1
    }

    @inlinable
    mutating func consumerDidAwait(nanoseconds: Int64) {
        counters.consumerWaitNanoseconds &+= UInt64(Swift.max(nanoseconds, 0))
    }

    // MARK: close

    @usableFromInline
    struct CloseAction {
        /// Items to release (immediate close only), oldest first.
        @usableFromInline var discarded: RingBuffer<Element>
        /// Whether any thread is parked and must be woken (all of them are).
        @usableFromInline var wakeAll: Bool
    }

    /// Closes; `failure` is kept only by the close that actually closes the stream.
    @usableFromInline
    mutating func close(immediate: Bool, failure: ProducerFailure? = nil) -> CloseAction {
        if !isClosed { self.failure = failure }
        isClosed = true
        if immediate { discardsBacklog = true }
        var discarded = RingBuffer<Element>()
        if immediate && !buffer.isEmpty {
            discarded = buffer.takeAll()!  // keeping no room: cannot fail
            counters.droppedOnClose &+= UInt64(discarded.count)
            _ = finishTasks(UInt64(discarded.count))
            flowCheck()
        }
        if flowWaiters > 0 { flowWakeWaiters = true; flowPending = true }
        let wakeAll = waitingProducers > 0 || waitingConsumers > 0 || waitingJoiners > 0
        return CloseAction(discarded: discarded, wakeAll: wakeAll)
    }

    // MARK: settle (a consumer reports what it did with reserved items)

    @usableFromInline
    struct SettleAction {
        /// Items to release: handed back after an immediate close (dropped on close).
        @usableFromInline var discarded: [Element]
        @usableFromInline var wakeProducers: Bool
        @usableFromInline var wakeConsumers: Bool
        @usableFromInline var wakeJoiners: Bool
    }

    /// Settles reserved items: `delivered` of them were consumed; `returned` (oldest first)
    /// were not and go back to the FRONT of the buffer, as if never taken (after an
    /// immediate close they are discarded instead). Their room is freed either way.
    /// The caller vouches for the numbers; they are clamped to what is reserved.
    /// Counts `delivered` reserved items as consumed (clamped to what is reserved). The
    /// room they free is for the caller to use or to announce (`producerCanProceed`).
    @inlinable @discardableResult
    mutating func settleDelivered(_ delivered: Int) -> Int {
        let delivered = Swift.min(Swift.max(delivered, 0), reserved)
        reserved -= delivered
        counters.consumed &+= UInt64(delivered)
        if delivered > 0 { flowCheck() }
        return delivered
    }

    @usableFromInline
    mutating func settle(delivered: Int, returned: [Element]) -> SettleAction {
        let delivered = settleDelivered(delivered)
        var action = SettleAction(discarded: [], wakeProducers: false, wakeConsumers: false,
                                  wakeJoiners: false)
        if !returned.isEmpty {
            reserved -= Swift.min(returned.count, reserved)
            if discardsBacklog {
                counters.droppedOnClose &+= UInt64(returned.count)
                action.wakeJoiners = finishTasks(UInt64(returned.count))
                action.discarded = returned
            } else {
                // Fits without growing: the ring holds the whole depth (see the invariants).
                let fits = buffer.reserve(buffer.count &+ returned.count)
                precondition(fits, "bpstream: the ring buffer lost room held for reserved items")
                buffer.prependAssumingRoom(contentsOf: returned)
                action.wakeConsumers = waitingConsumers > 0
            }
            flowCheck()
        }
        if delivered > 0 { rate.tick(produced: counters.produced, consumed: counters.consumed, dropped: counters.dropped) }
        action.wakeProducers = producerCanProceed && producersNeedWaking
        return action
    }

    /// In a forked child: the parked threads counted here stayed in the parent.
    @usableFromInline
    mutating func forgetWaiters() {
        waitingProducers = 0
        recheckingProducers = 0
        longestRecheck = 0
        waitingConsumers = 0
        waitingJoiners = 0
    }

    // MARK: tasks (queue.Queue's task_done / join)

    /// Marks `count` unfinished tasks finished; returns whether joiners must be woken.
    @inlinable
    mutating func finishTasks(_ count: UInt64) -> Bool {
        counters.unfinishedTasks -= Swift.min(count, counters.unfinishedTasks)
        return counters.unfinishedTasks == 0 && waitingJoiners > 0 && count > 0
    }

    @usableFromInline
    enum TaskDoneAction {
        case done(wakeJoiners: Bool)
        case tooMany
    }

    @usableFromInline
    mutating func taskDone(_ count: UInt64) -> TaskDoneAction {
        guard count <= counters.unfinishedTasks else { return .tooMany }
        return .done(wakeJoiners: finishTasks(count))
    }

    // MARK: capacity and snapshot

    /// Sets the bound (`Int.max`: unbounded); returns whether parked producers must wake.
    @usableFromInline
    mutating func setCapacity(_ newCapacity: Int) -> Bool {
        capacity = newCapacity
        flowChanged(flow.setCapacity(newCapacity == Int.max ? nil : newCapacity, depth: depth,
                                     now: flowClock.now()))
        return producerCanProceed
    }

    @usableFromInline
    mutating func snapshot(now: Int64) -> StreamStats {
        var stats = counters
        stats.depth = UInt64(depth)
        stats.capacity = capacity == Int.max ? nil : capacity
        stats.isClosed = isClosed
        stats.flowState = flow.state
        stats.throttleEvents = flow.throttleEvents
        stats.pauseEvents = flow.pauseEvents
        stats.timePausedNanoseconds = UInt64(Swift.max(flow.timePausedNanoseconds(now: flowClock.now()), 0))
        stats.throttleDelay = flow.throttleDelay(depth: depth)
        stats.recentDropRate = rate.recentDropRate(now: now, produced: counters.produced,
                                                   dropped: counters.dropped)
        (stats.producedPerSecond, stats.consumedPerSecond, stats.windowSeconds) =
            rate.rates(now: now, produced: counters.produced, consumed: counters.consumed)
        rate.record(now: now, produced: counters.produced, consumed: counters.consumed,
                    dropped: counters.dropped)
        return stats
    }
}

import CBPStreamCPU
import Synchronization

/// A thread-safe, multi-producer multi-consumer bounded stream with an explicit overflow
/// policy, close-and-drain, and exact metrics.
///
/// ```swift
/// let stream = try BoundedStream<Int>(capacity: 1024, policy: .block)
/// // producers:  try stream.put(42)
/// // consumers:  for item in stream { ... }   // ends once closed and drained
/// stream.close()
/// ```
///
/// - Important: Thread-safe: every method may be called from any thread at once. The stream
///   never runs caller code (`onDrop`, wait observers) while holding its lock; the one
///   exception is `forEachBuffered`, documented there.
///
/// Locking: one pthread mutex guards `state`; three condition variables park producers
/// (room), consumers (items) and joiners (no unfinished tasks). Every method follows the
/// same shape: lock, run one state-machine transition, unlock, then act on the returned
/// action (signal, release dropped items), so effects never run under the lock.
public final class BoundedStream<Element>: @unchecked Sendable {
    @usableFromInline let lock = PthreadLock()
    /// Producers wait here for room.
    @usableFromInline let notFull = PthreadCondition()
    /// Consumers wait here for an item (or close).
    @usableFromInline let notEmpty = PthreadCondition()
    /// `join` waits here for unfinished tasks to reach zero (or close).
    @usableFromInline let allTasksDone = PthreadCondition()
    /// Guarded by `lock`.
    @usableFromInline var state: StreamStateMachine<Element>
    /// Bumped (under the lock) by every transition a parked thread may be waiting for, and
    /// read WITHOUT the lock by a thread spinning before it parks (see `park`): a spinner
    /// that sees it change retries at once, skipping a sleep and a wake-up system call.
    @usableFromInline let changes = Atomic<UInt>(0)
    /// 1 while some thread spins in `park`: one spinner at a time, so threads outnumbering
    /// the cores never burn the time the thread they wait for needs.
    @usableFromInline let spinning = Atomic<Int>(0)
    /// Spins in a row that ended without what they waited for (guarded by `lock`). After
    /// one, `park` spins only every `spinRetryInterval`th time until a spin pays off again:
    /// a producer facing a slow consumer sleeps instead of burning its core.
    /// Kept apart for producers (`notFull`) and for everyone else, so a consumer's missed
    /// spins never stop a producer's spinning, nor the reverse.
    @usableFromInline var spinMisses = (producers: 0, others: 0)
    /// Reserved items a consumer has delivered and not yet settled, published WITHOUT the
    /// lock (`markDelivered`, a few nanoseconds per item). Whoever holds the lock and needs
    /// exact room or counts (a put on a full stream, a snapshot) absorbs them into the
    /// state (`absorbDeliveries`): a consumer never has to lock per item, and its delivered
    /// items never hold room a producer is waiting for.
    ///
    /// On the heap, at a fixed address, so a C consumer can add to it inline (see
    /// `deliveryCounter`); freed in deinit. The word after it is nonzero while a watch is
    /// armed for room (`absorbRequested`): a consumer that marks deliveries then settles,
    /// so the room it freed reaches the async producer waiting for it.
    @usableFromInline let deliveredMarks: UnsafeMutablePointer<Atomic<Int>> = {
        let storage = UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: 2)
        storage.initialize(to: Atomic(0))
        (storage + 1).initialize(to: Atomic(0))
        return storage
    }()
    /// Readiness watches (async waiters), guarded by `lock`; see `StreamWatch`.
    @usableFromInline var watches = Watches()
    /// Suspended async puts and gets (BoundedStream+Async.swift): created, with its two
    /// watches, by the first async call that has to wait; guarded by `lock`.
    var asyncWaiters: AsyncWaiters? = nil
    /// Receives every item the stream drops on its own, outside the lock, on the thread whose
    /// call dropped it. Items shed by `dropNewest` are not passed here: the putter keeps them.
    @usableFromInline let onDrop: ((Element, DropReason) -> Void)?

    /// The overflow policy, fixed at creation.
    public let policy: OverflowPolicy

    /// Puts waiting in the flow gate (a pause, or a throttle delay) wait here; broadcast
    /// when the flow state falls below PAUSED, and on close (FlowGate.swift).
    @usableFromInline let flowResumed = PthreadCondition()
    /// Paces every put that may wait (one permit per item), outside the lock; `nil`: none.
    public let rateController: (any RateController)?
    /// Whether the stream feeds `rateController` its own signals (`policy="adaptive"`):
    /// backpressure when a put waited for room or the stream entered PAUSED, success when a
    /// put held by the rate went through in NORMAL.
    public let isAdaptive: Bool
    /// Flow listeners (`onFlowChange`), guarded by `lock`; called outside it, in order.
    @usableFromInline var flowListeners: [FlowListener] = []
    /// Whether some thread is delivering flow transitions (guarded by `lock`): one at a
    /// time, so listeners see them in order.
    @usableFromInline var deliveringFlow = false
    /// The flow state as of the last unlock that changed it: read without the lock.
    @usableFromInline let flowStateMirror = Atomic<UInt8>(0)

    /// Creates a stream.
    ///
    /// - Parameters:
    ///   - capacity: `1...StreamLimits.maximumCapacity`, or `nil` for an unbounded stream
    ///     (then no put ever waits or drops).
    ///   - policy: what a full stream does with the next put.
    ///   - flow: watermark flow control: puts that may wait are delayed while THROTTLED and
    ///     wait while PAUSED (see `FlowControl`). `nil`: the states are classified with the
    ///     default marks and reported, and no put is delayed.
    ///   - rate: paces every put that may wait by one permit per item (outside the lock); a
    ///     put that may not wait takes a permit if one is there, else fails with `full`.
    ///   - adaptive: feed `rate` the stream's signals (an AIMD then follows the consumer);
    ///     needs `policy: .block` and a `rate`.
    ///   - clock: the time base of `timePaused` (a `ManualClock` in tests).
    ///   - onDrop: called for each item evicted, cleared, discarded by an immediate close,
    ///     or left at deinit; outside the lock.
    /// - Throws: `StreamError.invalidArgument` for a capacity out of range, or `adaptive`
    ///   without `.block` and a rate.
    public init(
        capacity: Int?, policy: OverflowPolicy = .block, flow: FlowControl? = nil,
        rate: (any RateController)? = nil, adaptive: Bool = false,
        clock: any ControlClock = SystemClock.shared,
        onDrop: ((Element, DropReason) -> Void)? = nil
    ) throws(StreamError) {
        if let capacity, !(1...StreamLimits.maximumCapacity).contains(capacity) {
            throw .invalidArgument(
                "capacity must be between 1 and \(StreamLimits.maximumCapacity), got \(capacity)")
        }
        if adaptive && (policy != .block || rate == nil) {
            throw .invalidArgument("an adaptive stream blocks and is paced by a rate controller")
        }
        self.policy = policy
        self.onDrop = onDrop
        self.rateController = rate
        self.isAdaptive = adaptive
        self.state = StreamStateMachine(capacity: capacity, policy: policy, now: MonotonicClock.now(),
                                        flow: flow, clock: clock)
        ForkRegistry.register(
            ForkMember(lock: lock, conditions: [notFull, notEmpty, allTasksDone, flowResumed]) {
                [unowned(unsafe) self] in self.forgetWaitersAfterFork()
            },
            for: ObjectIdentifier(self))
    }

    /// In a forked child (`ForkRegistry`): the threads that waited on this stream, spun on
    /// it or were counted as parked stayed in the parent.
    func forgetWaitersAfterFork() {
        state.forgetWaiters()
        state.flowWaiters = 0
        deliveringFlow = false
        spinning.store(0, ordering: .relaxed)
        spinMisses = (0, 0)
    }

    deinit {
        ForkRegistry.unregister(ObjectIdentifier(self))
        deliveredMarks.deinitialize(count: 2)
        deliveredMarks.deallocate()
        // Exclusive access: no other reference exists, so no lock is needed.
        guard let onDrop else { return }
        while let item = state.buffer.popFirst() { onDrop(item, .leftAtDeinit) }
    }

    // MARK: - Non-throwing core API (what the C ABI calls)

    /// Puts one item.
    ///
    /// - Parameter timeoutNanoseconds: `< 0` waits without limit, `0` never waits, `> 0`
    ///   waits at most that long. Only `block` ever waits.
    /// - Important: `.stored` moves the item into the stream; every other outcome leaves
    ///   it with the caller. Evicted or cleared items go to `onDrop` before this returns.
    ///   With flow control, a put that may wait passes the flow gate first (a delay while
    ///   THROTTLED, a wait while PAUSED); with a rate, it first takes a permit (FlowGate.swift).
    @inlinable
    public func put<Observer: WaitObserver>(
        _ item: Element, timeoutNanoseconds: Int64, observer: inout Observer
    ) -> PutOutcome {
        if rateController != nil {
            return putPaced(item, timeoutNanoseconds: timeoutNanoseconds, observer: &observer)
        }
        var waitedForRoom = false
        return putUnpaced(item, timeoutNanoseconds: timeoutNanoseconds, observer: &observer,
                          waitedForRoom: &waitedForRoom)
    }

    /// `put` without the rate: sets `waitedForRoom` when the put had to wait for room.
    @inlinable
    func putUnpaced<Observer: WaitObserver>(
        _ item: Element, timeoutNanoseconds: Int64, observer: inout Observer,
        waitedForRoom: inout Bool
    ) -> PutOutcome {
        lock.lock()
        if state.putsMustPassFlowGate && timeoutNanoseconds != 0 {
            return putThroughFlowGate(item, timeoutNanoseconds: timeoutNanoseconds,
                                      observer: &observer, waitedForRoom: &waitedForRoom)
        }
        if storeIfRoomThenUnlock(item) { return .stored }  // the hot path
        let action = state.put(item)
        if case .mustWait = action {
            if timeoutNanoseconds != 0 { waitedForRoom = true }
            return putWaiting(item, timeoutNanoseconds: timeoutNanoseconds, observer: &observer)
        }
        if action.stores { watches.itemsAppeared() }
        unlock()
        return perform(action)
    }

    /// A put that got `.mustWait` waits (lock held on entry and on return) until `item` is
    /// put, the timeout passes (counted as rejected), or the observer cancels. Returns how
    /// the wait ended and the put's action (`.mustWait` unless it was `.done`).
    @usableFromInline
    func parkToPut<Observer: WaitObserver>(
        _ item: Element, start: Int64, timeoutNanoseconds: Int64, observer: inout Observer
    ) -> (ParkResult, StreamStateMachine<Element>.PutAction) {
        state.producerWillWait()
        var action: StreamStateMachine<Element>.PutAction = .mustWait
        let parked = park(on: notFull, start: start, timeoutNanoseconds: timeoutNanoseconds,
                          observer: &observer) { eager in
            _ = absorbDeliveries(atLeast: eager ? 1 : state.absorbThreshold)
            absorbBeforePut(1, deciding: false)
            action = state.put(item)
            if case .mustWait = action { return false }
            return true
        }
        state.producerDidWait(nanoseconds: MonotonicClock.now() - start)
        if parked == .timedOut { state.producerGaveUp() }
        if action.stores { watches.itemsAppeared() }
        return (parked, action)
    }

    /// The slow path of `put`: called with the lock held after `.mustWait`; returns unlocked.
    @usableFromInline
    func putWaiting<Observer: WaitObserver>(
        _ item: Element, timeoutNanoseconds: Int64, observer: inout Observer
    ) -> PutOutcome {
        guard timeoutNanoseconds != 0 else {
            state.producerGaveUp()
            unlock()
            return .full
        }
        let (parked, action) = parkToPut(item, start: MonotonicClock.now(),
                                         timeoutNanoseconds: timeoutNanoseconds, observer: &observer)
        noteTransition()
        unlock()
        let outcome: PutOutcome
        switch parked {
        case .done: outcome = perform(action, observer: &observer)
        case .timedOut: outcome = .full; observer.didWait()
        case .cancelled: outcome = .cancelled; observer.didWait()
        }
        return outcome
    }

    /// Carries out a put's action after unlocking; ends a wait episode (if any) before
    /// releasing dropped items, so releases run where the caller's runtime lock is held.
    @usableFromInline
    func perform<Observer: WaitObserver>(
        _ action: StreamStateMachine<Element>.PutAction, observer: inout Observer
    ) -> PutOutcome {
        if case .stored(let wakeConsumer) = action, wakeConsumer { notEmpty.signal() }
        observer.didWait()
        return perform(action)
    }

    /// Carries out a put's action after unlocking (no wait episode open).
    @usableFromInline
    func perform(_ action: StreamStateMachine<Element>.PutAction) -> PutOutcome {
        switch action {
        case .stored:
            return .stored
        case .storedEvicting(let evicted, let wakeJoiners):
            if wakeJoiners { allTasksDone.broadcast() }
            onDrop?(evicted, .evicted)
            return .stored
        case .storedClearing(let cleared, let wakeJoiners):
            if wakeJoiners { allTasksDone.broadcast() }
            if let onDrop { for item in cleared { onDrop(item, .cleared) } }
            return .stored
        case .shed:
            return .shed
        case .rejected, .mustWait:
            return .full
        case .closed:
            return .closed
        case .noMemory:
            return .noMemory
        }
    }

    /// Puts `items` in order under one lock acquisition per wait episode.
    ///
    /// - Returns: how many items the stream took (the first `taken`), and how the call
    ///   ended: `.stored` (all taken), `.shed` (the rest were shed: `dropNewest`), or
    ///   `.full`/`.closed`/`.cancelled`/`.noMemory` (the rest were not put and stay with
    ///   the caller).
    ///   One timeout covers the whole call.
    @inlinable
    public func put<Items: Collection, Observer: WaitObserver>(
        contentsOf items: Items, timeoutNanoseconds: Int64, observer: inout Observer
    ) -> (taken: Int, outcome: PutOutcome) where Items.Element == Element {
        if rateController != nil {
            return putPaced(contentsOf: items, timeoutNanoseconds: timeoutNanoseconds, observer: &observer)
        }
        var taken = 0
        var outcome = PutOutcome.stored
        var wakeConsumers = false
        var wakeJoiners = false
        var dropped: [(Element, DropReason)] = []
        var start: Int64 = 0  // set when the first wait begins: the timeout runs from there
        var index = items.startIndex
        lock.lock()
        // Flow control gates a batch once, before its first item (FlowGate.swift); the
        // time the gate took counts against the call's timeout.
        var timeoutNanoseconds = timeoutNanoseconds
        if state.putsMustPassFlowGate && timeoutNanoseconds != 0 && !items.isEmpty {
            let gateStart = MonotonicClock.now()
            var waitedForRoom = false
            if let refused = passFlowGate(start: gateStart, timeoutNanoseconds: timeoutNanoseconds,
                                          observer: &observer, waitedForRoom: &waitedForRoom) {
                unlock()
                return (0, refused)
            }
            if timeoutNanoseconds > 0 {
                timeoutNanoseconds = Swift.max(timeoutNanoseconds - (MonotonicClock.now() - gateStart), 1)
            }
        }
        loop: while index != items.endIndex {
            absorbBeforePut(items.distance(from: index, to: items.endIndex), deciding: true)
            // As many as fit, at once; then the next one item by item, which may wait,
            // evict, shed or fail as the policy says.
            let stored = state.storeIfRoom(contentsOf: items[index...])
            if stored > 0 {
                watches.itemsAppeared()
                wakeConsumers = wakeConsumers || state.waitingConsumers > 0
                taken += stored
                items.formIndex(&index, offsetBy: stored)
                continue
            }
            var action = state.put(items[index])
            if case .mustWait = action {
                if timeoutNanoseconds == 0 {
                    state.producerGaveUp()
                    outcome = .full
                    break loop
                }
                // Wake consumers for what this call already stored before parking:
                // otherwise they would sleep on items that are there.
                if wakeConsumers { notEmpty.broadcast(); wakeConsumers = false }
                if !watches.pending.isEmpty {  // and async ones: notify outside the lock
                    unlock()
                    lock.lock()
                    continue
                }
                let now = MonotonicClock.now()
                if start == 0 { start = now }
                let remaining = timeoutNanoseconds < 0
                    ? -1 : Swift.max(timeoutNanoseconds - (now - start), 1)
                let parked: ParkResult
                (parked, action) = parkToPut(items[index], start: now, timeoutNanoseconds: remaining,
                                             observer: &observer)
                noteTransition()
                unlock()
                // Wake the consumer this store fed before taking back the caller's runtime lock.
                if case .stored(true) = action { notEmpty.signal() }
                observer.didWait()
                lock.lock()
                if parked == .timedOut { outcome = .full; break loop }
                if parked == .cancelled { outcome = .cancelled; break loop }
            }
            if action.stores { watches.itemsAppeared() }
            switch action {
            case .stored(let wake):
                wakeConsumers = wakeConsumers || wake
            case .storedEvicting(let evicted, let wake):
                dropped.append((evicted, .evicted))
                wakeJoiners = wakeJoiners || wake
            case .storedClearing(let cleared, let wake):
                for item in cleared { dropped.append((item, .cleared)) }
                wakeJoiners = wakeJoiners || wake
            case .shed:
                // Under the lock nothing can make room, so every later item is shed too.
                let rest = items.distance(from: index, to: items.endIndex) - 1
                if rest > 0 { state.recordShed(rest) }
                outcome = .shed
                break loop
            case .rejected, .mustWait:
                outcome = .full
                break loop
            case .closed:
                outcome = .closed
                break loop
            case .noMemory:
                outcome = .noMemory
                break loop
            }
            taken += 1
            items.formIndex(after: &index)
        }
        if taken > 0 { noteTransition() }
        unlock()
        if wakeConsumers { notEmpty.broadcast() }
        if wakeJoiners { allTasksDone.broadcast() }
        if let onDrop { for (item, reason) in dropped { onDrop(item, reason) } }
        return (taken, outcome)
    }

    /// Gets the oldest item, waiting as `timeoutNanoseconds` says (see `put`).
    ///
    /// - Important: `.success` moves the item to the caller; failures move nothing.
    @inlinable
    public func get<Observer: WaitObserver>(
        timeoutNanoseconds: Int64, observer: inout Observer
    ) -> Result<Element, GetFailure> {
        lock.lock()
        if let item = state.takeIfAny() {  // the hot path
            watches.roomAppeared()
            let wakeProducer = state.producerCanProceed
            noteTransition()
            unlock()
            if wakeProducer { notFull.signal() }
            return .success(item)
        }
        let action = state.get()
        if case .closed(let failure) = action {
            unlock()
            return .failure(failure.map(GetFailure.failed) ?? .closed)
        }
        return getWaiting(timeoutNanoseconds: timeoutNanoseconds, observer: &observer)
    }

    /// The slow path of `get`: called with the lock held after `.mustWait`; returns unlocked.
    @usableFromInline
    func getWaiting<Observer: WaitObserver>(
        timeoutNanoseconds: Int64, observer: inout Observer
    ) -> Result<Element, GetFailure> {
        guard timeoutNanoseconds != 0 else {
            unlock()
            return .failure(.empty)
        }
        let start = MonotonicClock.now()
        wakeProducersForPublishedRoom()
        state.consumerWillWait()
        var action: StreamStateMachine<Element>.GetAction = .mustWait
        let parked = park(on: notEmpty, start: start, timeoutNanoseconds: timeoutNanoseconds,
                          observer: &observer) { _ in
            action = state.get()
            if case .mustWait = action { return false }
            return true
        }
        state.consumerDidWait(nanoseconds: MonotonicClock.now() - start)
        if case .item = action { watches.roomAppeared() }
        noteTransition()
        unlock()
        let result: Result<Element, GetFailure>
        switch (parked, action) {
        case (.done, .item(let item, let wakeProducer)):
            if wakeProducer { notFull.signal() }
            result = .success(item)
        case (.done, .closed(let failure)):
            result = .failure(failure.map(GetFailure.failed) ?? .closed)
        case (.done, .mustWait):
            result = .failure(.closed)  // unreachable: park returns .done only otherwise
        case (.timedOut, _): result = .failure(.empty)
        case (.cancelled, _): result = .failure(.cancelled)
        }
        observer.didWait()
        return result
    }

    /// Waits (as `timeoutNanoseconds` says) for at least one item, then takes up to
    /// `buffer.count` items, oldest first, initialising `buffer[0..<n]`.
    ///
    /// - Returns: `n >= 1` on success; failures move nothing.
    ///
    /// - Parameter reserving: take the items as reserved: they stay in the depth and hold
    ///   their room until `settle` reports them delivered or hands them back.
    @inlinable
    public func get<Observer: WaitObserver>(
        into buffer: UnsafeMutableBufferPointer<Element>, reserving: Bool = false,
        timeoutNanoseconds: Int64, observer: inout Observer
    ) -> Result<Int, GetFailure> {
        guard buffer.count > 0 else { return .success(0) }
        let now = reserving ? MonotonicClock.now() : 0
        lock.lock()
        var action = state.take(into: buffer, reserving: reserving, now: now)
        if case .mustWait = action {
            guard timeoutNanoseconds != 0 else {
                unlock()
                return .failure(.empty)
            }
            let start = MonotonicClock.now()
            wakeProducersForPublishedRoom()
            state.consumerWillWait()
            let parked = park(on: notEmpty, start: start, timeoutNanoseconds: timeoutNanoseconds,
                              observer: &observer) { _ in
                action = state.take(into: buffer, reserving: reserving,
                                    now: reserving ? MonotonicClock.now() : 0)
                if case .mustWait = action { return false }
                return true
            }
            state.consumerDidWait(nanoseconds: MonotonicClock.now() - start)
            if !reserving, case .took = action { watches.roomAppeared() }
            noteTransition()
            unlock()
            let result: Result<Int, GetFailure>
            switch parked {
            case .timedOut: result = .failure(.empty)
            case .cancelled: result = .failure(.cancelled)
            case .done: result = finishTake(action)  // signals before didWait, as park says
            }
            observer.didWait()
            return result
        }
        if !reserving, case .took = action { watches.roomAppeared() }
        noteTransition()
        unlock()
        return finishTake(action)
    }

    /// Bumps `changes` for a transition (lock held), if anyone is registered as waiting:
    /// only they spin on it, and each registers (under the lock) before it reads it, so a
    /// transition nobody waits for skips the atomic write.
    @inlinable @inline(__always)
    func noteTransition() {
        if state.waitingProducers | state.waitingConsumers | state.waitingJoiners != 0 {
            changes.add(1, ordering: .relaxed)
        }
    }

    /// Called (lock held) by a consumer about to wait on an empty stream: room its
    /// deliveries published without a signal goes to parked producers now, not at their
    /// next recheck, so the two never wait on each other for a timer.
    @usableFromInline
    func wakeProducersForPublishedRoom() {
        if absorbDeliveries(), state.producerCanProceed { notFull.broadcast() }
    }

    /// Carries out a batch get's action after unlocking: wakes the producers it made room for.
    @usableFromInline
    func finishTake(_ action: StreamStateMachine<Element>.TakeAction) -> Result<Int, GetFailure> {
        switch action {
        case .took(let count, let wakeProducers):
            if wakeProducers { count == 1 ? notFull.signal() : notFull.broadcast() }
            return .success(count)
        case .closed(let failure):
            return .failure(failure.map(GetFailure.failed) ?? .closed)
        case .mustWait:
            return .failure(.closed)
        }
    }

    /// Closes the stream: puts fail with `closed`; gets drain what is buffered, then fail
    /// with `closed`; every parked thread wakes. With `immediate`, the backlog is discarded
    /// (passed to `onDrop` on this thread, outside the lock). Closing again is harmless.
    ///
    /// - Parameter failure: a producer's error: consumers get it, after every item put
    ///   before it, instead of a plain `closed`. Ignored if the stream was already closed.
    public func close(immediate: Bool = false, failure: ProducerFailure? = nil) {
        lock.lock()
        let action = state.close(immediate: immediate, failure: failure)
        watches.closed()
        watches.tasksFinished(unfinished: state.counters.unfinishedTasks)  // discards count as done
        noteTransition()
        unlock()
        if action.wakeAll {
            notFull.broadcast()
            notEmpty.broadcast()
            allTasksDone.broadcast()
        }
        flowResumed.broadcast()  // puts in the flow gate end at once (cheap when none wait)
        if let onDrop { for item in action.discarded { onDrop(item, .discardedOnClose) } }
    }

    /// Settles items taken with `get(into:reserving: true)`: `delivered` of them were
    /// consumed; `returned` (oldest first) were not and go back to the FRONT, as if never
    /// taken (after an immediate close they go to `onDrop` instead, dropped on close).
    /// Until settled, reserved items count in the depth and hold their room.
    public func settle(delivered: Int, returning returned: [Element] = []) {
        lock.lock()
        _ = absorbDeliveries()
        let action = state.settle(delivered: delivered, returned: returned)
        if !returned.isEmpty { watches.itemsAppeared() }
        if delivered > 0 { watches.roomAppeared() }
        if !action.discarded.isEmpty {  // handed back after an immediate close: done
            watches.tasksFinished(unfinished: state.counters.unfinishedTasks)
        }
        noteTransition()
        unlock()
        if action.wakeProducers { notFull.broadcast() }
        if action.wakeConsumers { notEmpty.broadcast() }
        if action.wakeJoiners { allTasksDone.broadcast() }
        if let onDrop { for item in action.discarded { onDrop(item, .discardedOnClose) } }
    }

    /// Marks `count` items processed (`queue.Queue.task_done`).
    ///
    /// - Returns: `false` (and changes nothing) if that exceeds the unfinished tasks.
    public func taskDone(count: UInt64 = 1) -> Bool {
        lock.lock()
        let action = state.taskDone(count)
        watches.tasksFinished(unfinished: state.counters.unfinishedTasks)
        noteTransition()
        unlock()
        switch action {
        case .tooMany: return false
        case .done(let wakeJoiners):
            if wakeJoiners { allTasksDone.broadcast() }
            return true
        }
    }

    /// Waits until every enqueued item was marked done, evicted, cleared or discarded.
    public func join<Observer: WaitObserver>(
        timeoutNanoseconds: Int64, observer: inout Observer
    ) -> JoinOutcome {
        lock.lock()
        if state.counters.unfinishedTasks == 0 {
            unlock()
            return .finished
        }
        guard timeoutNanoseconds != 0 else {
            unlock()
            return .timedOut
        }
        state.waitingJoiners += 1
        let parked = park(on: allTasksDone, start: MonotonicClock.now(),
                          timeoutNanoseconds: timeoutNanoseconds, observer: &observer) { _ in
            state.counters.unfinishedTasks == 0
        }
        state.waitingJoiners -= 1
        unlock()
        observer.didWait()
        switch parked {
        case .done: return .finished
        case .timedOut: return .timedOut
        case .cancelled: return .cancelled
        }
    }

    // MARK: - Parking

    @usableFromInline
    enum ParkResult { case done, timedOut, cancelled }

    /// How long `park` spins (lock released) watching `changes` before it sleeps: about
    /// what a futex sleep and wake-up cost, so a spin never burns more than it can save.
    /// (20 µs cost a reader feeding a consumer that takes ~0.3 µs per line 0.3 cores of
    /// spinning, for no gain in throughput.)
    @usableFromInline static var spinNanoseconds: Int64 { 5_000 }

    /// After a spin that missed, one park in this many spins (see `spinMisses`).
    @usableFromInline static var spinRetryInterval: Int { 8 }


    /// Waits on `condition` until `attempt(eager)` succeeds, the timeout passes, or the
    /// observer cancels.
    ///
    /// `eager` tells a producer's attempt how much published room (`deliveredMarks`) to
    /// take: false on the looks right after the spin, which want a worthwhile batch
    /// (`absorbThreshold`), so a producer facing a slow consumer sleeps instead of waking
    /// for every few items; true once it has slept (woken by a signal, or by the recheck
    /// that bounds how long published room can go unused) and for the final look before a
    /// timeout, which takes any room there is.
    ///
    /// Called and returns with the lock held. Runs `observer.willWait()` (and
    /// `shouldCancel()` polls) with the lock released; the CALLER runs `didWait()` after
    /// unlocking, once it has signalled whoever its transition woke (so a native peer is not
    /// kept waiting while this thread takes back a runtime lock).
    @usableFromInline
    func park<Observer: WaitObserver>(
        on condition: PthreadCondition, start: Int64, timeoutNanoseconds: Int64,
        observer: inout Observer, attempt: (_ eager: Bool) -> Bool
    ) -> ParkResult {
        let deadline = timeoutNanoseconds < 0 || timeoutNanoseconds > Int64.max - start
            ? Int64.max : start + timeoutNanoseconds
        let interval = observer.pollIntervalNanoseconds
        let seen = changes.load(ordering: .relaxed)
        let worthwhileDeliveries = state.absorbThreshold
        let isProducer = condition === notFull
        let misses = isProducer ? spinMisses.producers : spinMisses.others
        let trySpin = misses % Self.spinRetryInterval == 0
        unlock()
        observer.willWait()
        // Spin briefly before sleeping: a peer on another core (a native producer, or a
        // Python thread that just got the GIL) usually acts within microseconds, and
        // catching that here saves both threads a futex sleep and wake-up.
        var spinMissed: Bool? = nil  // nil: did not spin
        if trySpin && spinning.compareExchange(expected: 0, desired: 1, ordering: .relaxed).exchanged {
            let spinUntil = Swift.min(MonotonicClock.now() &+ Self.spinNanoseconds, deadline)
            var spins = 0
            spinMissed = false
            while changes.load(ordering: .relaxed) == seen {
                bps_cpu_relax()
                spins &+= 1
                if spins & 15 == 0 {
                    if MonotonicClock.now() >= spinUntil { spinMissed = true; break }
                    // Published deliveries free room without a state change; looked at
                    // only now and then, so the consumer's cache line stays its own.
                    if deliveredMarks.pointee.load(ordering: .relaxed) >= worthwhileDeliveries { break }
                }
            }
            spinning.store(0, ordering: .relaxed)
        }
        lock.lock()
        // Updated on the live count (other threads may have parked meanwhile).
        func record(_ misses: inout Int) {
            switch spinMissed {
            case nil: if !trySpin { misses &+= 1 }  // skipped: toward the next retry
            case true?: misses &+= 1
            case false?: misses = 0
            }
        }
        if isProducer { record(&spinMisses.producers) } else { record(&spinMisses.others) }
        var nextPoll = interval > 0 ? start.addingSaturated(interval) : Int64.max
        var eager = false
        var recheckDelay = StreamStateMachine<Element>.reservedRecheck
        while true {
            if attempt(eager) { return .done }
            let now = MonotonicClock.now()
            if now >= deadline { return attempt(true) ? .done : .timedOut }
            if now >= nextPoll {
                unlock()
                let cancel = observer.shouldCancel()
                lock.lock()
                if cancel { return .cancelled }
                nextPoll = now.addingSaturated(interval)
                continue  // the state may have changed while unlocked
            }
            // Deliveries of reserved items are published without a signal: while any are
            // out, a producer looks again on a timer (so it finds its room even if the
            // consumer stops in the middle of a batch), backing off while it finds none;
            // consumers leave it to that timer while it keeps up (`rechecksKeepUp`).
            let rechecking = condition === notFull && state.reserved > 0
            let recheck = rechecking ? now.addingSaturated(recheckDelay) : Int64.max
            let wakeAt = Swift.min(deadline, nextPoll, recheck)
            if rechecking {
                state.recheckingProducers += 1
                state.longestRecheck = Swift.max(state.longestRecheck, recheckDelay)
            }
            if !watches.pending.isEmpty {  // notify async waiters before sleeping, unlocked
                unlock()
                lock.lock()
                continue
            }
            if wakeAt == Int64.max {
                condition.wait(lock)
            } else {
                condition.wait(lock, until: wakeAt)
            }
            if rechecking {
                state.recheckingProducers -= 1
                if state.recheckingProducers == 0 { state.longestRecheck = 0 }
                recheckDelay = Swift.min(2 * recheckDelay, StreamStateMachine<Element>.reservedRecheckLimit)
            }
            eager = true
        }
    }

    // MARK: - Unlocking, and readiness watches (async waiters)

    /// Releases the lock, then notifies the watches that the transitions made under it
    /// concern (`Watches.pending`): every transition's unlock goes through here, so no
    /// armed watch misses a readiness, and none is notified under the lock.
    /// Flow transitions made under the lock (`state.flowPending`) are acted on here too.
    @inlinable @inline(__always)
    func unlock() {
        if watches.pending.isEmpty && !state.flowPending {
            lock.unlock()
            return
        }
        unlockActing()
    }

    /// `unlock` when watches are due or the flow state changed: collects what to do under
    /// the lock, unlocks, then notifies watches, wakes puts waiting in the flow gate,
    /// reports pauses to an adaptive rate, and delivers flow transitions to listeners.
    @usableFromInline
    func unlockActing() {
        let due = watches.collectDue()
        var wakeFlowWaiters = false
        var pausesToReport = 0
        var deliver = false
        if state.flowPending {
            state.flowPending = false
            wakeFlowWaiters = state.flowWakeWaiters
            state.flowWakeWaiters = false
            pausesToReport = state.flowPausesToReport
            state.flowPausesToReport = 0
            flowStateMirror.store(state.flow.state.rawValue, ordering: .relaxed)
            if !state.flowTransitions.isEmpty && !deliveringFlow {
                deliveringFlow = true
                deliver = true
            }
        }
        updateAbsorbRequest()
        lock.unlock()
        due.deliver()
        if wakeFlowWaiters { flowResumed.broadcast() }
        if pausesToReport > 0, isAdaptive, let rateController {
            for _ in 0..<pausesToReport { rateController.recordBackpressure() }
        }
        if deliver { deliverFlowTransitions() }
    }

    /// Keeps `absorbRequested` (the word after the delivery marks) in step (lock held): set
    /// while a watch waits for room, or while the flow state is above NORMAL on a stream
    /// whose flow state acts (gates puts, has listeners, or drives an adaptive rate), so
    /// consumers then settle each delivery and the state falls (and paused puts wake) at once.
    @inlinable
    func updateAbsorbRequest() {
        let flowActs = state.flow.state != .normal
            && (state.flowGatesPuts || state.flowListeners > 0 || isAdaptive)
        (deliveredMarks + 1).pointee.store(watches.armedWritable > 0 || flowActs ? 1 : 0,
                                           ordering: .relaxed)
    }

    /// Registers `notify` for readiness notifications (see `StreamWatch` for the protocol).
    /// The stream keeps the watch until `unwatch`.
    public func watch(_ notify: @escaping @Sendable (Readiness) -> Void) -> StreamWatch {
        let watch = StreamWatch(notify: notify)
        lock.lock()
        watches.all.append(watch)
        lock.unlock()
        return watch
    }

    /// Ends `watch`: it is disarmed and never notified again by a transition that starts
    /// after this returns (one already past the lock may still be calling it).
    public func unwatch(_ watch: StreamWatch) {
        lock.lock()
        watches.disarm(watch)
        watch.isWatching = false
        watches.all.removeAll { $0 === watch }
        updateAbsorbRequest()
        unlock()
    }

    /// Arms `watch` for `events` unless one of them holds now: returns what holds (then
    /// nothing is armed and the waiter retries at once), or `[]` once armed. A closed
    /// stream is ready for items and room (`.closed` included), but `tasksDone` holds only
    /// with no unfinished tasks, closed or not; an unwatched watch is ready for everything.
    public func arm(_ watch: StreamWatch, for events: Readiness) -> Readiness {
        lock.lock()
        _ = absorbDeliveries()
        var ready: Readiness = []
        if !watch.isWatching {
            ready = events.union(.closed)
        } else {
            if state.isClosed {  // ready for items and room; tasks are done only when done
                let waits = events.subtracting(.tasksDone)
                if !waits.isEmpty { ready = waits.union(.closed) }
            } else {
                if events.contains(.readable), state.buffer.count > 0 { ready.insert(.readable) }
                if events.contains(.writable), state.depth < state.capacity { ready.insert(.writable) }
            }
            if events.contains(.tasksDone), state.counters.unfinishedTasks == 0 { ready.insert(.tasksDone) }
            if ready.isEmpty {
                watches.arm(watch, for: events)
                updateAbsorbRequest()
            }
        }
        unlock()
        return ready
    }

    /// A put for an async waiter: never waits; on a full `block` stream it returns `.full`
    /// WITHOUT counting a rejection (the caller waits, see `account`). Every other outcome,
    /// and every other policy, is `put(item, timeoutNanoseconds: 0)`'s.
    @inlinable
    public func tryPut(_ item: Element) -> PutOutcome {
        lock.lock()
        if storeIfRoomThenUnlock(item) { return .stored }  // the hot path
        let action = state.put(item)
        if case .mustWait = action {
            unlock()
            return .full
        }
        if action.stores { watches.itemsAppeared() }
        noteTransition()
        unlock()
        if case .stored(true) = action { notEmpty.signal() }
        return perform(action)
    }

    /// Counts an async waiter's wait in the stats (see `AsyncWait`).
    public func account(_ wait: AsyncWait) {
        lock.lock()
        state.account(wait)
        lock.unlock()
    }

    // MARK: - Inspection and configuration

    /// Publishes that `count` reserved items were delivered, without the lock (see
    /// `deliveredMarks`): they stop holding room and count as consumed at once for anyone
    /// who looks. `settle` later needs only the ones it hands back.
    @inlinable
    public func markDelivered(_ count: Int = 1) {
        deliveredMarks.pointee.add(count, ordering: .releasing)
        // A watch waits for room: absorb now, so the room reaches it (see `deliveredMarks`).
        if (deliveredMarks + 1).pointee.load(ordering: .relaxed) != 0 { settle(delivered: 0) }
    }

    /// The address of the delivery counter `markDelivered` adds to: a word-sized integer a
    /// C consumer may add to atomically (release order) instead of calling it, saving a
    /// call per item. Valid for the stream's lifetime.
    public var deliveryCounter: UnsafeMutableRawPointer { UnsafeMutableRawPointer(deliveredMarks) }

    /// The hot path of every single put (lock held): with the depth made exact, stores
    /// `item` if there is room, then unlocks and wakes a parked consumer, and returns true;
    /// returns false, still locked and with nothing changed, when the stream is full or
    /// closed (the caller's policy decides).
    @inlinable @inline(__always)
    func storeIfRoomThenUnlock(_ item: Element) -> Bool {
        absorbBeforePut(1, deciding: true)
        guard state.storeIfRoom(item) else { return false }
        watches.itemsAppeared()
        let wakeConsumer = state.waitingConsumers > 0
        noteTransition()
        unlock()
        if wakeConsumer { notEmpty.signal() }
        return true
    }

    /// Makes the depth exact before a put of up to `count` items    /// Makes the depth exact before a put of up to `count` items where published deliveries
    /// could change what the put observes (lock held). A put DECIDES (store, wait, shed,
    /// evict, reject) on exactly what a single lock over one FIFO would show: a delivered
    /// item's room is free for every put at once, so a put never waits, sheds or evicts
    /// while there is room, and `peakDepth` never counts delivered items. `deciding` is
    /// false for a parked producer's retries, which need the exact depth only for the peak:
    /// how soon a parked put takes published room is timing, not semantics (see `park`).
    ///
    /// Cheap in the steady state: the marks' cache line (the consumer's) is read only when
    /// the stream looks full, or when this put may raise the peak.
    @inlinable @inline(__always)
    func absorbBeforePut(_ count: Int, deciding: Bool) {
        let depth = state.depth
        // The depth once what fits is stored: only that can raise the peak (a batch that
        // does not fit stores up to the capacity, then comes back here, full).
        let after = Swift.min(depth &+ count, state.capacity)
        if after > Int(truncatingIfNeeded: state.counters.peakDepth)
            || after >= state.flow.riseAt  // the flow state rises only on the exact depth
            || (deciding && depth >= state.capacity)
        {
            _ = absorbDeliveries()
        }
    }

    /// Turns published deliveries into state: the lock must be held. Returns whether any
    /// were absorbed (so room may have appeared). A PARKED put absorbs only a worthwhile
    /// number (`absorbThreshold`) on its first look: absorbing one mark per wake-up would
    /// bounce the marks' cache line between the two cores for every item; it takes fewer
    /// only once it has slept, or on its last look before a timeout (see `park`).
    @inlinable
    func absorbDeliveries(atLeast minimum: Int = 1) -> Bool {
        guard deliveredMarks.pointee.load(ordering: .relaxed) >= Swift.max(minimum, 1) else { return false }
        let marks = deliveredMarks.pointee.exchange(0, ordering: .acquiring)
        guard state.settleDelivered(marks) > 0 else { return false }
        watches.roomAppeared()
        return true
    }

    /// Items in the stream now (buffered, plus reserved and not yet delivered).
    public var count: Int {
        lock.lock()
        defer { unlock() }
        _ = absorbDeliveries()
        return state.depth
    }

    /// Whether `close` was called.
    public var isClosed: Bool {
        lock.lock()
        defer { unlock() }
        return state.isClosed
    }

    /// The error a producer closed the stream with, if it did.
    public var failure: ProducerFailure? {
        lock.lock()
        defer { unlock() }
        return state.failure
    }

    /// The bound now; `nil` when unbounded.
    public var capacity: Int? {
        lock.lock()
        defer { unlock() }
        return state.capacity == Int.max ? nil : state.capacity
    }

    /// Changes the bound (`nil`: unbounded). Growing wakes parked producers; shrinking below
    /// the depth keeps every buffered item (puts wait, or drop one, until it falls under).
    public func setCapacity(_ capacity: Int?) throws(StreamError) {
        if let capacity, !(1...StreamLimits.maximumCapacity).contains(capacity) {
            throw .invalidArgument(
                "capacity must be between 1 and \(StreamLimits.maximumCapacity), got \(capacity)")
        }
        lock.lock()
        _ = absorbDeliveries()
        let wake = state.setCapacity(capacity ?? Int.max)
        watches.roomAppeared()  // harmless when it shrank: a woken waiter just retries
        noteTransition()
        unlock()
        if wake { notFull.broadcast() }
    }

    /// One consistent snapshot of every metric.
    public func stats() -> StreamStats {
        let now = MonotonicClock.now()
        lock.lock()
        _ = absorbDeliveries()
        var stats = state.snapshot(now: now)
        unlock()
        stats.rateLimit = rateController?.currentRate  // the controller's code: not under our lock
        return stats
    }

    /// Calls `body` on each buffered item, oldest first, until it returns `false`.
    ///
    /// - Important: the one place caller code runs WITH the stream's lock held: `body` must
    ///   not call into this stream, block, or take a lock another holder of this lock waits
    ///   for. Meant for a garbage collector's traversal.
    public func forEachBuffered(_ body: (Element) -> Bool) {
        lock.lock()
        defer { unlock() }
        for item in state.buffer where !body(item) { break }
    }
}

// MARK: - Throwing Swift API

extension BoundedStream {
    /// Puts one item; `timeout` `nil` waits without limit (`block` only ever waits).
    ///
    /// - Returns: `true` if stored, `false` if shed (`dropNewest`).
    /// - Throws: `.full` (`reject`, or the timeout passed), `.closed`.
    @discardableResult
    @inlinable
    public func put(_ item: Element, timeout: Duration? = nil) throws(StreamError) -> Bool {
        var observer = NoWaitObserver()
        switch put(item, timeoutNanoseconds: timeout.map(\.clampedNanoseconds) ?? -1,
                   observer: &observer) {
        case .stored: return true
        case .shed: return false
        case .full: throw .full
        case .closed: throw .closed
        case .cancelled: throw .cancelled
        case .noMemory: throw .noMemory
        }
    }

    /// Gets the oldest item; `timeout` `nil` waits without limit.
    ///
    /// - Throws: `.empty` when the timeout passes, `.closed` once closed and drained.
    @inlinable
    public func get(timeout: Duration? = nil) throws(StreamError) -> Element {
        var observer = NoWaitObserver()
        switch get(timeoutNanoseconds: timeout.map(\.clampedNanoseconds) ?? -1, observer: &observer) {
        case .success(let item): return item
        case .failure(.empty): throw .empty
        case .failure(.closed): throw .closed
        case .failure(.cancelled): throw .cancelled
        case .failure(.failed(let failure)): throw .failed(failure)
        }
    }

    /// Waits for at least one item, then takes up to `maxCount`, oldest first.
    public func get(maxCount: Int, timeout: Duration? = nil) throws(StreamError) -> [Element] {
        guard maxCount >= 1 else { throw .invalidArgument("maxCount must be at least 1") }
        let limit = Swift.min(maxCount, Swift.max(count, 256))
        var observer = NoWaitObserver()
        var failure: GetFailure? = nil
        let array = [Element](unsafeUninitializedCapacity: limit) { buffer, initialized in
            switch get(into: buffer, timeoutNanoseconds: timeout.map(\.clampedNanoseconds) ?? -1,
                       observer: &observer) {
            case .success(let n): initialized = n
            case .failure(let reason): initialized = 0; failure = reason
            }
        }
        switch failure {
        case nil: return array
        case .empty: throw .empty
        case .closed: throw .closed
        case .cancelled: throw .cancelled
        case .failed(let failure): throw .failed(failure)
        }
    }

    /// Marks one item processed. - Throws: `.tooManyTaskDone`.
    public func taskDone() throws(StreamError) {
        if !taskDone(count: 1) { throw .tooManyTaskDone }
    }

    /// Waits until every enqueued item is done. - Throws: `.timedOut`.
    public func join(timeout: Duration? = nil) throws(StreamError) {
        var observer = NoWaitObserver()
        if join(timeoutNanoseconds: timeout.map(\.clampedNanoseconds) ?? -1, observer: &observer)
            != .finished { throw .timedOut }
    }
}

extension BoundedStream: Sequence {
    /// Blocking iteration: `next()` waits for an item and returns `nil` once the stream is
    /// closed and drained.
    public struct Iterator: IteratorProtocol {
        @usableFromInline let stream: BoundedStream

        @inlinable
        public mutating func next() -> Element? {
            var observer = NoWaitObserver()
            return try? stream.get(timeoutNanoseconds: -1, observer: &observer).get()
        }
    }

    public func makeIterator() -> Iterator { Iterator(stream: self) }
}

extension Int64 {
    /// `self + other`, or `Int64.max` where that would overflow (deadlines far away).
    @usableFromInline
    func addingSaturated(_ other: Int64) -> Int64 {
        let (sum, overflow) = addingReportingOverflow(other)
        return overflow ? Int64.max : sum
    }
}

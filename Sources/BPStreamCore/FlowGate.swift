// What a stream does with its flow state and its rate: the flow gate a put that may wait
// passes (a delay while THROTTLED, a wait while PAUSED), pacing by a rate controller, the
// feedback an adaptive stream gives its rate, and flow listeners. The state itself is
// `StreamStateMachine.flow` (Flow.swift), updated by every depth change under the lock.
//
// Rules kept here: every delay and wait runs WITHOUT the stream's lock, through the put's
// WaitObserver (a binding lets go of its runtime lock and answers Ctrl-C in
// `shouldCancel`), counts against the put's timeout, and ends at once on close. A put that
// may not wait (timeout 0, `tryPut`, async puts) is never delayed. Listeners, and the rate
// controller, are never called under the lock.

/// A registered flow listener (`BoundedStream.onFlowChange`); pass it to
/// `removeFlowListener` to end it.
public final class FlowListener: @unchecked Sendable {
    @usableFromInline let callback: @Sendable (FlowTransition) -> Void
    init(_ callback: @escaping @Sendable (FlowTransition) -> Void) { self.callback = callback }
}

extension BoundedStream {
    // MARK: - Public flow API

    /// A `block` stream paced by an AIMD it drives itself (`policy="adaptive"`): a put that
    /// waited for room, or entering PAUSED, backs the limit off; puts the rate held that go
    /// through in NORMAL let it grow. `rate` defaults to AIMD(1000/s, increase 100, window 0.1 s).
    public static func adaptive(
        capacity: Int?, flow: FlowControl? = nil, rate: (any RateController)? = nil,
        clock: any ControlClock = SystemClock.shared, onDrop: ((Element, DropReason) -> Void)? = nil
    ) throws(StreamError) -> BoundedStream {
        let pacing: any RateController
        if let rate { pacing = rate } else {
            pacing = try AIMD(initial: 1000, increase: 100, windowNanoseconds: 100_000_000, clock: clock)
        }
        return try BoundedStream(capacity: capacity, policy: .block, flow: flow, rate: pacing,
                                 adaptive: true, clock: clock, onDrop: onDrop)
    }

    /// The flow state now (as of the last transition; no lock taken).
    public var flowState: FlowState {
        FlowState(rawValue: flowStateMirror.load(ordering: .relaxed)) ?? .normal
    }

    /// Calls `callback` once per flow transition, in order, never under the stream's lock,
    /// on the thread whose call made it (or on the thread already delivering earlier ones:
    /// one thread delivers at a time, so the order holds). The callback may call into the
    /// stream. Transitions made before this returns are not reported.
    public func onFlowChange(_ callback: @escaping @Sendable (FlowTransition) -> Void) -> FlowListener {
        let listener = FlowListener(callback)
        lock.lock()
        flowListeners.append(listener)
        state.flowListeners = flowListeners.count
        updateAbsorbRequest()
        unlock()
        return listener
    }

    /// Ends `listener`: no transition made after this returns reaches it (one being
    /// delivered already may still be). Removing it twice is harmless.
    public func removeFlowListener(_ listener: FlowListener) {
        lock.lock()
        flowListeners.removeAll { $0 === listener }
        state.flowListeners = flowListeners.count
        if flowListeners.isEmpty { state.flowTransitions.removeAll() }
        updateAbsorbRequest()
        unlock()
    }

    /// Delivers queued transitions until none is left. Called by the one deliverer (it set
    /// `deliveringFlow` under the lock), without the lock.
    @usableFromInline
    func deliverFlowTransitions() {
        while true {
            lock.lock()
            let batch = state.flowTransitions
            state.flowTransitions.removeAll(keepingCapacity: true)
            let listeners = flowListeners
            if batch.isEmpty { deliveringFlow = false }
            unlock()  // changes nothing a waiter or watch waits for: no new work here
            if batch.isEmpty { return }
            for transition in batch { for listener in listeners { listener.callback(transition) } }
        }
    }

    // MARK: - The flow gate

    /// A put that may wait, on a stream whose puts pass the flow gate (lock held on entry;
    /// returns unlocked): passes the gate, then puts as usual with what is left of its timeout.
    @usableFromInline
    func putThroughFlowGate<Observer: WaitObserver>(
        _ item: Element, timeoutNanoseconds: Int64, observer: inout Observer, waitedForRoom: inout Bool
    ) -> PutOutcome {
        let start = MonotonicClock.now()
        if let refused = passFlowGate(start: start, timeoutNanoseconds: timeoutNanoseconds,
                                      observer: &observer, waitedForRoom: &waitedForRoom) {
            unlock()
            return refused
        }
        if storeIfRoomThenUnlock(item) { return .stored }
        let action = state.put(item)
        if case .mustWait = action {
            waitedForRoom = true
            let remaining = timeoutNanoseconds < 0
                ? -1 : Swift.max(timeoutNanoseconds - (MonotonicClock.now() - start), 1)
            return putWaiting(item, timeoutNanoseconds: remaining, observer: &observer)
        }
        if action.stores { watches.itemsAppeared() }
        unlock()
        return perform(action)
    }

    /// The flow gate (lock held on entry and on return). Returns `nil` when the put may go
    /// on (the state is NORMAL or THROTTLED and the put took its one delay, the stream is
    /// closed, or it is full and a dropping policy decides), or how the put ends: `.full`
    /// when its timeout passed first (counted as rejected; a delay longer than the time
    /// left ends at the deadline), `.cancelled` when the observer cancelled.
    ///
    /// - THROTTLED: one delay per put, `FlowMonitor.throttleDelayNanoseconds`.
    /// - PAUSED (and DROPPING with room, under hysteresis): waits until the state falls
    ///   below PAUSED, woken by the transition that makes it fall (a consumer's).
    /// - DROPPING when full: `block` waits for room as without flow control (a producer
    ///   wait, `waitedForRoom`), then re-evaluates; the other policies decide at once.
    @usableFromInline
    func passFlowGate<Observer: WaitObserver>(
        start: Int64, timeoutNanoseconds: Int64, observer: inout Observer, waitedForRoom: inout Bool
    ) -> PutOutcome? {
        let deadline = timeoutNanoseconds < 0 ? Int64.max : start.addingSaturated(timeoutNanoseconds)
        var delayed = false
        while state.putsMustPassFlowGate && !state.isClosed {
            _ = absorbDeliveries()
            let full = state.depth >= state.capacity
            switch state.flow.state {
            case .normal:
                return nil
            case .throttled:
                if delayed { return nil }
                delayed = true
                let delay = state.flow.throttleDelayNanoseconds(depth: state.depth)
                if delay <= 0 { return nil }
                let end = MonotonicClock.now().addingSaturated(delay)
                switch flowWait(until: Swift.min(end, deadline), observer: &observer,
                                until: { state.isClosed }) {
                case .cancelled: return .cancelled
                case .done: continue  // closed: the put reports it
                case .timedOut:
                    if end > deadline {
                        state.producerGaveUp()
                        return .full
                    }
                }
            case .dropping where full && policy != .block:
                return nil  // the policy decides, as without flow control
            case .dropping where full:
                // block: waits for room as without flow control (the same spinning park,
                // woken by consumers), then re-evaluates the state (PAUSED waits on).
                waitedForRoom = true
                let waitStart = MonotonicClock.now()
                state.producerWillWait()
                let parked = park(on: notFull, start: waitStart,
                                  timeoutNanoseconds: deadline == Int64.max ? -1 : Swift.max(deadline - waitStart, 1),
                                  observer: &observer) { _ in
                    _ = absorbDeliveries()
                    return state.isClosed || state.depth < state.capacity
                }
                state.producerDidWait(nanoseconds: MonotonicClock.now() - waitStart)
                unlock()
                observer.didWait()
                lock.lock()
                switch parked {
                case .cancelled: return .cancelled
                case .timedOut:
                    state.producerGaveUp()
                    return .full
                case .done: continue
                }
            case .paused, .dropping:  // DROPPING here: with room, under hysteresis
                let result = flowWait(until: deadline, observer: &observer) {
                    state.isClosed || state.flow.state < .paused
                }
                switch result {
                case .cancelled: return .cancelled
                case .timedOut:
                    state.producerGaveUp()
                    return .full
                case .done: continue
                }
            }
        }
        return nil
    }

    /// How often a put waiting in the flow gate looks at published deliveries on its own,
    /// at first and at most: consumers settle each delivery while the state is above NORMAL
    /// (`updateAbsorbRequest`) and the fall wakes the put; this bounds the wait for one
    /// that marked just before the request reached it.
    @usableFromInline static var flowRecheck: Int64 { 1_000_000 }
    @usableFromInline static var flowRecheckLimit: Int64 { 20_000_000 }

    /// Waits (lock held on entry and on return; released while waiting) until `done()`
    /// holds, `wakeAt` passes, or the observer cancels: one wait episode of the observer
    /// (`willWait` ... `didWait`, both without the lock). Published deliveries are absorbed
    /// before each look, so a fall of the flow state they make is seen.
    @usableFromInline
    func flowWait<Observer: WaitObserver>(
        until wakeAt: Int64, observer: inout Observer, until done: () -> Bool
    ) -> ParkResult {
        if done() { return .done }
        let interval = observer.pollIntervalNanoseconds
        unlock()
        observer.willWait()
        lock.lock()
        var nextPoll = interval > 0 ? MonotonicClock.now().addingSaturated(interval) : Int64.max
        var recheck = Self.flowRecheck
        let result: ParkResult
        while true {
            _ = absorbDeliveries()
            if done() { result = .done; break }
            let now = MonotonicClock.now()
            if now >= wakeAt { result = .timedOut; break }
            if now >= nextPoll {
                unlock()
                let cancel = observer.shouldCancel()
                lock.lock()
                if cancel { result = .cancelled; break }
                nextPoll = now.addingSaturated(interval)
                continue
            }
            if state.flowPending || !watches.pending.isEmpty {  // act on it (unlocked) first
                unlock()
                lock.lock()
                continue
            }
            state.flowWaiters += 1
            flowResumed.wait(lock, until: Swift.min(wakeAt, nextPoll, now.addingSaturated(recheck)))
            state.flowWaiters -= 1
            recheck = Swift.min(recheck * 2, Self.flowRecheckLimit)
        }
        unlock()
        observer.didWait()
        lock.lock()
        return result
    }

    // MARK: - The flow gate for callers that wait themselves (asyncio)

    /// What the flow gate would do to a put that may wait arriving now, for a caller that
    /// cannot block here and passes the gate itself (an asyncio put): `.normal` and 0 when
    /// it passes (no `flow=`, NORMAL, closed, or full with a dropping policy: the policy
    /// decides); `.throttled` and the delay (0 or more) it takes once; `.paused` when it
    /// waits until the state falls below PAUSED (DROPPING with room under hysteresis is
    /// reported so, as the gate treats it); `.dropping` when the stream is full and `block`:
    /// it waits for room (a producer wait), then asks again. Published deliveries are
    /// absorbed first, so the answer is exact. Takes the lock briefly; never waits.
    public func flowGateForCallerWaiting() -> (state: FlowState, delayNanoseconds: Int64) {
        lock.lock()
        _ = absorbDeliveries()
        var answer: (state: FlowState, delayNanoseconds: Int64) = (.normal, 0)
        if state.putsMustPassFlowGate && !state.isClosed {
            let full = state.depth >= state.capacity
            switch state.flow.state {
            case .normal:
                break
            case .throttled:
                answer = (.throttled, Swift.max(state.flow.throttleDelayNanoseconds(depth: state.depth), 0))
            case .dropping where full:
                if policy == .block { answer = (.dropping, 0) }
            case .paused, .dropping:
                answer = (.paused, 0)
            }
        }
        unlock()
        return answer
    }

    /// Counts a put that gave up in a flow gate or on the rate it passed itself (its
    /// timeout passed, or the rate can never grant it) as rejected, as the core's own
    /// gate and pacing count theirs.
    public func countPutGaveUpAtGate() {
        countRejected()
    }

    // MARK: - Pacing by the rate controller

    /// A put on a paced stream: one permit first (waiting, outside the lock, with the put's
    /// timeout, if it may wait; else only if one is there: refused puts fail with `full`
    /// and count as rejected), then the put with what is left of its timeout.
    @usableFromInline
    func putPaced<Observer: WaitObserver>(
        _ item: Element, timeoutNanoseconds: Int64, observer: inout Observer
    ) -> PutOutcome {
        let start = MonotonicClock.now()
        let heldByRate: Bool
        switch takePermit(timeoutNanoseconds: timeoutNanoseconds, observer: &observer) {
        case .granted(let held): heldByRate = held
        case .refused(let outcome): return outcome
        }
        let remaining = timeoutNanoseconds <= 0
            ? timeoutNanoseconds : Swift.max(timeoutNanoseconds - (MonotonicClock.now() - start), 1)
        var waitedForRoom = false
        let outcome = putUnpaced(item, timeoutNanoseconds: remaining, observer: &observer,
                                 waitedForRoom: &waitedForRoom)
        giveFeedback(outcome: outcome, heldByRate: heldByRate, waitedForRoom: waitedForRoom)
        return outcome
    }

    /// A batch on a paced stream: item by item, each a paced put (one permit each), one
    /// timeout for the whole call.
    @usableFromInline
    func putPaced<Items: Collection, Observer: WaitObserver>(
        contentsOf items: Items, timeoutNanoseconds: Int64, observer: inout Observer
    ) -> (taken: Int, outcome: PutOutcome) where Items.Element == Element {
        let start = MonotonicClock.now()
        var taken = 0
        for item in items {
            var remaining = timeoutNanoseconds
            if timeoutNanoseconds > 0 {
                remaining = timeoutNanoseconds - (MonotonicClock.now() - start)
                if remaining <= 0 {
                    lock.lock()
                    state.producerGaveUp()
                    unlock()
                    return (taken, .full)
                }
            }
            let outcome = putPaced(item, timeoutNanoseconds: remaining, observer: &observer)
            switch outcome {
            case .stored: taken += 1
            case .shed:
                // Like an unpaced batch: once one is shed, the rest are shed too.
                let rest = items.count - taken - 1
                if rest > 0 {
                    lock.lock()
                    state.recordShed(rest)
                    unlock()
                }
                return (taken, .shed)
            default: return (taken, outcome)
            }
        }
        return (taken, .stored)
    }

    @usableFromInline
    enum Permit {
        /// The put may go on; `held`: the rate made it wait.
        case granted(held: Bool)
        /// The put ends so (refusals and timeouts counted as rejected).
        case refused(PutOutcome)
    }

    /// Takes one permit from the rate, outside the lock.
    @usableFromInline
    func takePermit<Observer: WaitObserver>(timeoutNanoseconds: Int64, observer: inout Observer) -> Permit {
        guard let rate = rateController else { return .granted(held: false) }
        if timeoutNanoseconds == 0 {
            if rate.tryAcquire(1) { return .granted(held: false) }
            countRejected()
            return .refused(.full)
        }
        switch rate.acquire(1, timeoutNanoseconds: timeoutNanoseconds, observer: &observer) {
        case .granted(let waited): return .granted(held: waited > 0)
        case .cancelled: return .refused(.cancelled)
        case .timedOut, .impossible:
            countRejected()
            return .refused(.full)
        }
    }

    @usableFromInline
    func countRejected() {
        lock.lock()
        state.producerGaveUp()
        unlock()
    }

    /// An adaptive stream's feedback to its rate, after the put (no lock held).
    @usableFromInline
    func giveFeedback(outcome: PutOutcome, heldByRate: Bool, waitedForRoom: Bool) {
        guard isAdaptive, let rate = rateController else { return }
        if waitedForRoom {
            rate.recordBackpressure()
        } else if heldByRate && outcome == .stored && flowState == .normal {
            rate.recordSuccess()
        }
    }
}

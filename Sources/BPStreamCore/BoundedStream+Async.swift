// Async puts and gets: the same stream, the same outcomes and counters as the blocking API,
// but a call that must wait suspends its task instead of parking a thread.
//
// API. `put(_:timeout:)`, `get(timeout:)` and `get(maxCount:timeout:)` are overloaded on
// `async`: Swift picks the async overload in an async context (and then requires `await`)
// and the blocking one in a synchronous context, so a task cannot block a thread of the
// cooperative pool by accident, and code reads the same on both sides. `for try await` over
// the stream is the `AsyncSequence`; `for item in stream` stays the blocking `Sequence`.
//
// The wait (the readiness protocol of `StreamWatch`, shared by every async waiter):
//   1. try the non-blocking transition (`attemptPut`/`attemptGet`/`attemptTake`);
//   2. it must wait: join this stream's FIFO of waiting putters (or getters), then arm the
//      queue's watch; if the readiness already holds, arm reports it and we wake the head
//      of the queue ourselves (maybe this very waiter);
//   3. the transition that makes the readiness true notifies the watch (outside the lock,
//      on whatever thread made it) and the notification resumes the HEAD waiter only; a
//      close resumes every waiter;
//   4. the woken waiter retries (1). It is woken, never handed an item: a waiter cancelled
//      after its wake-up takes nothing, and whoever retries gets the item.
//
// Waiter bookkeeping (`AsyncWaiters`, one per stream, made by the first wait): two queues
// (putters, getters), each with its own watch, so a notification for room never disarms
// the watch for items. Each queue is a FIFO of `AsyncWaiter` records under a small mutex.
//
// Invariants, and who resumes each continuation exactly once:
// - A record's `continuation` is non-nil exactly while the record is in its queue. It is
//   stored by `enqueue` and taken (set to nil, removed from the queue) under the queue's
//   mutex by exactly one of: `wake` (resumes `.woken`), `wakeAll` (close), or `interrupt`
//   (cancellation or timeout: resumes `.interrupted`). Whoever takes it resumes it, after
//   releasing the mutex. `enqueue` refuses a record already interrupted (the flag is
//   sticky), and the caller then resumes its own continuation at once.
// - Chain wake-ups: one notification wakes one waiter, and that waiter is then responsible
//   for the rest: every waiter that leaves the slow path (success, close, timeout,
//   cancellation after a wake-up) calls `passOn`, which re-arms the watch if others still
//   wait (and wakes the next at once if the readiness holds). A waiter whose retry fails
//   goes back to the FRONT of the queue and re-arms. So while a queue is non-empty, its
//   watch is armed or some woken waiter is about to arm it: no waiter is stranded.
// - A notification that finds the queue empty wakes nobody; harmless, because every new
//   waiter arms after it joins the queue, and arming reports a readiness that holds.
//
// Timeouts: a call with a timeout runs its wait inside a task group whose one child sleeps
// (`Task.sleep`, no thread held) until the deadline and then interrupts the record. A
// timed-out waiter retries once more (as a blocking call does at its deadline), then
// reports `.full`/`.empty`. A child task per timed wait costs far less than the suspension
// itself, needs no timer thread or per-stream timer queue, and its cancellation when the
// wait ends is structured (the group does it); untimed waits and calls that need not wait
// create no task.
//
// Cancellation: a call in a cancelled task throws `.cancelled` before touching the stream;
// a task cancelled while suspended is removed from the queue and throws `.cancelled`; the
// item of a cancelled put stays with the caller, and a cancelled get takes nothing. A task
// cancelled after being woken passes its wake-up on (`passOn`) before it throws.
//
// Stats: a call that waits counts one wait (`producerWaits` + a backpressure event, or
// `consumerWaits`) in the same critical section as the attempt that found it must wait,
// and its wait time when it ends; a put that times out counts as rejected: all exactly as a
// blocking call. Async waiters are NOT counted in `waitingProducers`/`waitingConsumers`:
// those count threads parked on a condition variable, which only they can hear.
import Synchronization

// MARK: - Public API

extension BoundedStream {
    /// Puts one item, suspending the task (never blocking a thread) while a `block` stream
    /// is full; `timeout` `nil` waits without limit. Other policies never wait.
    ///
    /// - Returns: `true` if stored, `false` if shed (`dropNewest`).
    /// - Throws: `.full` (`reject`, or the timeout passed), `.closed`, `.cancelled` (the
    ///   task was cancelled before the item was stored).
    /// - Important: only a `true` return moves the item into the stream; on every error the
    ///   item stays with the caller (nothing is stored by a cancelled put).
    @discardableResult
    public func put(_ item: Element, timeout: Duration? = nil) async throws(StreamError) -> Bool {
        if Task.isCancelled { throw .cancelled }
        let nanoseconds = timeout.map(\.clampedNanoseconds) ?? -1
        if nanoseconds == 0 { return try putNow(item) }
        return try await waitingCall(.writable, timeoutNanoseconds: nanoseconds) { start in
            attemptPut(item, waitingSince: start)
        }.get()
    }

    /// Gets the oldest item, suspending the task while the stream is empty; `timeout` `nil`
    /// waits without limit.
    ///
    /// - Throws: `.empty` when the timeout passes, `.closed` once closed and drained,
    ///   `.failed` (the producer's error, once drained), `.cancelled`.
    /// - Important: a cancelled get takes nothing: the item stays for the next consumer.
    public func get(timeout: Duration? = nil) async throws(StreamError) -> Element {
        if Task.isCancelled { throw .cancelled }
        let nanoseconds = timeout.map(\.clampedNanoseconds) ?? -1
        if nanoseconds == 0 { return try getNow() }
        return try await waitingCall(.readable, timeoutNanoseconds: nanoseconds) { start in
            attemptGet(waitingSince: start)
        }.get()
    }

    /// Suspends until at least one item is there, then takes up to `maxCount`, oldest first.
    ///
    /// - Throws: as `get(timeout:)`, and `.invalidArgument` for `maxCount < 1`.
    public func get(maxCount: Int, timeout: Duration? = nil) async throws(StreamError) -> [Element] {
        guard maxCount >= 1 else { throw .invalidArgument("maxCount must be at least 1") }
        if Task.isCancelled { throw .cancelled }
        let nanoseconds = timeout.map(\.clampedNanoseconds) ?? -1
        if nanoseconds == 0 { return try getNow(maxCount: maxCount) }
        return try await waitingCall(.readable, timeoutNanoseconds: nanoseconds) { start in
            attemptTake(maxCount: maxCount, waitingSince: start)
        }.get()
    }
}

// A zero timeout never waits: the blocking calls, which a synchronous context selects.
extension BoundedStream {
    func putNow(_ item: Element) throws(StreamError) -> Bool { try put(item, timeout: .zero) }
    func getNow() throws(StreamError) -> Element { try get(timeout: .zero) }
    func getNow(maxCount: Int) throws(StreamError) -> [Element] { try get(maxCount: maxCount, timeout: .zero) }
}

extension BoundedStream: AsyncSequence {
    public typealias Failure = StreamError

    /// Async iteration: `next()` suspends for an item, returns `nil` once the stream is
    /// closed and drained, and throws the producer's error (`.failed`) in its place, or
    /// `.cancelled` in a cancelled task (taking nothing). Iteration ends after a throw.
    public struct AsyncIterator: AsyncIteratorProtocol {
        public typealias Failure = StreamError
        @usableFromInline let stream: BoundedStream
        @usableFromInline var finished = false

        public mutating func next() async throws(StreamError) -> Element? {
            if finished { return nil }
            do {
                return try await stream.get()
            } catch .closed {
                finished = true
                return nil
            } catch {
                finished = true
                throw error
            }
        }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(stream: self) }
}

// MARK: - Attempts: one non-blocking transition each, under the stream's lock

/// How one attempt of an async call ended.
enum AsyncAttempt<Value> {
    case done(Value)
    case failed(StreamError)
    /// Nothing changed; wait on these waiters' queue, then try again.
    case mustWait(AsyncWaiters)
}

extension BoundedStream {
    /// The async waiters of this stream, made on first use (lock held).
    func asyncWaitersLocked() -> AsyncWaiters {
        if let asyncWaiters { return asyncWaiters }
        let made = AsyncWaiters()
        watches.all.append(made.putterWatch)
        watches.all.append(made.getterWatch)
        asyncWaiters = made
        return made
    }

    /// `put(item, timeoutNanoseconds: 0)`, except that a full `block` stream is not counted
    /// as a rejection: the caller waits. `waitingSince` is nil on the first attempt (then a
    /// `mustWait` counts the wait the caller is about to begin) and the wait's start
    /// (`MonotonicClock`) on retries (then an outcome adds the time waited).
    func attemptPut(_ item: Element, waitingSince start: Int64?) -> AsyncAttempt<Bool> {
        lock.lock()
        absorbBeforePut(1, deciding: true)
        let action = state.put(item)
        if case .mustWait = action {
            if start == nil { state.producerWillAwait() }
            let waiters = asyncWaitersLocked()
            unlock()
            return .mustWait(waiters)
        }
        if let start { state.producerDidAwait(nanoseconds: MonotonicClock.now() - start) }
        if action.stores { watches.itemsAppeared() }
        noteTransition()
        unlock()
        if case .stored(true) = action { notEmpty.signal() }  // a thread parked for an item
        switch perform(action) {  // releases what the put evicted or cleared
        case .stored: return .done(true)
        case .shed: return .done(false)
        case .full, .cancelled: return .failed(.full)
        case .closed: return .failed(.closed)
        case .noMemory: return .failed(.noMemory)
        }
    }

    /// `get(timeoutNanoseconds: 0)`, counting waits as `attemptPut` does.
    func attemptGet(waitingSince start: Int64?) -> AsyncAttempt<Element> {
        lock.lock()
        switch state.get() {
        case .mustWait:
            if start == nil {
                wakeProducersForPublishedRoom()
                state.consumerWillAwait()
            }
            let waiters = asyncWaitersLocked()
            unlock()
            return .mustWait(waiters)
        case .item(let item, let wakeProducer):
            if let start { state.consumerDidAwait(nanoseconds: MonotonicClock.now() - start) }
            watches.roomAppeared()
            noteTransition()
            unlock()
            if wakeProducer { notFull.signal() }
            return .done(item)
        case .closed(let failure):
            if let start { state.consumerDidAwait(nanoseconds: MonotonicClock.now() - start) }
            unlock()
            return .failed(failure.map(StreamError.failed) ?? .closed)
        }
    }

    /// `get(maxCount:timeout: .zero)`, counting waits as `attemptPut` does.
    func attemptTake(maxCount: Int, waitingSince start: Int64?) -> AsyncAttempt<[Element]> {
        let limit = Swift.min(maxCount, Swift.max(count, 256))
        var outcome: AsyncAttempt<[Element]>? = nil
        var wakeProducers = false
        let items = [Element](unsafeUninitializedCapacity: limit) { buffer, initialized in
            initialized = 0
            lock.lock()
            switch state.take(into: buffer) {
            case .mustWait:
                if start == nil {
                    wakeProducersForPublishedRoom()
                    state.consumerWillAwait()
                }
                outcome = .mustWait(asyncWaitersLocked())
            case .took(let count, let wake):
                if let start { state.consumerDidAwait(nanoseconds: MonotonicClock.now() - start) }
                watches.roomAppeared()
                noteTransition()
                initialized = count
                wakeProducers = wake
            case .closed(let failure):
                if let start { state.consumerDidAwait(nanoseconds: MonotonicClock.now() - start) }
                outcome = .failed(failure.map(StreamError.failed) ?? .closed)
            }
            unlock()
        }
        if let outcome { return outcome }
        if wakeProducers { items.count == 1 ? notFull.signal() : notFull.broadcast() }
        return .done(items)
    }

    /// Ends a wait that got no outcome from an attempt (timeout or cancellation): adds the
    /// time waited, and counts a put that timed out as rejected, as a blocking put does.
    func endAsyncWait(_ kind: Readiness, since start: Int64, timedOut: Bool) {
        let waited = MonotonicClock.now() - start
        lock.lock()
        if kind == .writable {
            state.producerDidAwait(nanoseconds: waited)
            if timedOut { state.producerGaveUp() }
        } else {
            state.consumerDidAwait(nanoseconds: waited)
        }
        unlock()
    }
}

// MARK: - Waiting

extension BoundedStream {
    /// Runs `attempt` (given the wait's start once waiting) until it ends the call,
    /// suspending on the `kind` queue in between (see the file's header).
    func waitingCall<Value>(
        _ kind: Readiness, timeoutNanoseconds: Int64,
        attempt: (_ waitingSince: Int64?) -> AsyncAttempt<Value>
    ) async -> Result<Value, StreamError> {
        let waiters: AsyncWaiters
        switch attempt(nil) {  // the fast path: no suspension, nothing scheduled
        case .done(let value): return .success(value)
        case .failed(let error): return .failure(error)
        case .mustWait(let queueOwner): waiters = queueOwner
        }
        let start = MonotonicClock.now()
        let waiter = AsyncWaiter()
        let queue = waiters.queue(kind)
        // Beyond a century, a timeout is "forever" (and no clock arithmetic can overflow).
        guard timeoutNanoseconds > 0, timeoutNanoseconds < 3_155_760_000 * 1_000_000_000 else {
            return await waitLoop(kind, waiters, waiter, start: start, attempt: attempt)
        }
        let deadline = ContinuousClock.now + .nanoseconds(timeoutNanoseconds)
        return await withTaskGroup(of: Void.self) { group in
            group.addTask {
                do {
                    try await Task.sleep(until: deadline, clock: .continuous)
                } catch {
                    return  // the wait ended first
                }
                queue.interrupt(waiter, .timedOut)
            }
            let result = await waitLoop(kind, waiters, waiter, start: start, attempt: attempt)
            group.cancelAll()
            return result
        }
    }

    func waitLoop<Value>(
        _ kind: Readiness, _ waiters: AsyncWaiters, _ waiter: AsyncWaiter, start: Int64,
        attempt: (_ waitingSince: Int64?) -> AsyncAttempt<Value>
    ) async -> Result<Value, StreamError> {
        let queue = waiters.queue(kind)
        let watch = waiters.watch(kind)
        var retrying = false
        while true {
            let wake = await queue.suspend(waiter, atFront: retrying) { arm(watch, for: kind) }
            retrying = true
            if Task.isCancelled {
                if wake == .woken { passOn(kind, waiters) }
                endAsyncWait(kind, since: start, timedOut: false)
                return .failure(.cancelled)
            }
            switch attempt(start) {
            case .done(let value):
                passOn(kind, waiters)
                return .success(value)
            case .failed(let error):
                passOn(kind, waiters)
                return .failure(error)
            case .mustWait:
                // Woken, but another consumer (or producer) of any kind got there first:
                // back to the front of the queue. A timed-out waiter has had its last try.
                if wake == .interrupted(.timedOut) {
                    passOn(kind, waiters)
                    endAsyncWait(kind, since: start, timedOut: true)
                    return .failure(kind == .writable ? .full : .empty)
                }
            }
        }
    }

    /// Hands the readiness on to the next waiter of `kind`, if any waits: re-arms the watch,
    /// and wakes that waiter at once if the readiness holds now.
    func passOn(_ kind: Readiness, _ waiters: AsyncWaiters) {
        let queue = waiters.queue(kind)
        guard !queue.isEmpty else { return }
        let ready = arm(waiters.watch(kind), for: kind)
        if !ready.isEmpty { queue.wake(ready) }
    }
}

/// The async waiters of one stream: a queue of suspended putters and one of getters, each
/// with the watch that wakes it. The watches' notifications capture only their queue, so
/// nothing here refers back to the stream.
final class AsyncWaiters: Sendable {
    let putters = AsyncWaiterQueue()
    let getters = AsyncWaiterQueue()
    let putterWatch: StreamWatch
    let getterWatch: StreamWatch

    init() {
        putterWatch = StreamWatch { [putters] ready in putters.wake(ready) }
        getterWatch = StreamWatch { [getters] ready in getters.wake(ready) }
    }

    func queue(_ kind: Readiness) -> AsyncWaiterQueue { kind == .writable ? putters : getters }
    func watch(_ kind: Readiness) -> StreamWatch { kind == .writable ? putterWatch : getterWatch }
}

/// Why a waiter was resumed without a wake-up.
enum AsyncInterruption: Sendable, Equatable {
    case cancelled
    case timedOut
}

/// How a suspended waiter was resumed.
enum AsyncWake: Sendable, Equatable {
    /// By a notification (or a waiter passing one on): its readiness held; retry.
    case woken
    /// By its own cancellation or timeout, while queued (it took no wake-up), or at once
    /// because that happened before it could queue.
    case interrupted(AsyncInterruption)
}

/// One async call's place in a queue; reused across the retries of that call.
final class AsyncWaiter: @unchecked Sendable {
    /// Guarded by the queue's mutex: non-nil exactly while the record is queued.
    var continuation: CheckedContinuation<AsyncWake, Never>? = nil
    /// Guarded by the queue's mutex; sticky once set.
    var interruption: AsyncInterruption? = nil
}

/// A FIFO of suspended waiters of one kind (see the file's header for the invariants).
final class AsyncWaiterQueue: @unchecked Sendable {
    /// Oldest first. An array: queues are short, and front inserts (a retry) are rare.
    private let waiters = LockedWaiters()

    var isEmpty: Bool { waiters.withLock { $0.isEmpty } }

    /// Suspends the task: queues `waiter` (at the front when it retries), then `arm`s,
    /// waking the head at once if the readiness already holds. Returns how it was resumed.
    func suspend(
        _ waiter: AsyncWaiter, atFront: Bool, arm: () -> Readiness
    ) async -> AsyncWake {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<AsyncWake, Never>) in
                if let refused = enqueue(waiter, continuation, atFront: atFront) {
                    continuation.resume(returning: .interrupted(refused))
                    return
                }
                let ready = arm()
                if !ready.isEmpty { wake(ready) }
            }
        } onCancel: {
            interrupt(waiter, .cancelled)
        }
    }

    /// Queues `waiter`, or returns why it may not wait (it was interrupted meanwhile).
    private func enqueue(
        _ waiter: AsyncWaiter, _ continuation: CheckedContinuation<AsyncWake, Never>,
        atFront: Bool
    ) -> AsyncInterruption? {
        waiters.withLock { queue in
            if let interruption = waiter.interruption { return interruption }
            waiter.continuation = continuation
            if atFront { queue.insert(waiter, at: 0) } else { queue.append(waiter) }
            return nil
        }
    }

    /// Marks `waiter` interrupted (sticky: its first reason stays); if it is queued,
    /// removes and resumes it.
    func interrupt(_ waiter: AsyncWaiter, _ reason: AsyncInterruption) {
        let taken = waiters.withLock { queue -> (CheckedContinuation<AsyncWake, Never>, AsyncInterruption)? in
            if waiter.interruption == nil { waiter.interruption = reason }
            guard let continuation = waiter.continuation else { return nil }
            waiter.continuation = nil
            if let index = queue.firstIndex(where: { $0 === waiter }) { queue.remove(at: index) }
            return (continuation, waiter.interruption ?? reason)
        }
        if let (continuation, reported) = taken { continuation.resume(returning: .interrupted(reported)) }
    }

    /// A readiness holds: wakes the head waiter, or every waiter once the stream closed.
    func wake(_ ready: Readiness) {
        if ready.contains(.closed) {
            let all = waiters.withLock { queue -> [CheckedContinuation<AsyncWake, Never>] in
                let taken = queue.compactMap { waiter in
                    defer { waiter.continuation = nil }
                    return waiter.continuation
                }
                queue.removeAll()
                return taken
            }
            for continuation in all { continuation.resume(returning: .woken) }
            return
        }
        let head = waiters.withLock { queue -> CheckedContinuation<AsyncWake, Never>? in
            guard !queue.isEmpty else { return nil }
            let waiter = queue.removeFirst()
            defer { waiter.continuation = nil }
            return waiter.continuation
        }
        head?.resume(returning: .woken)
    }
}

/// The waiter list behind a pthread mutex (`PthreadLock`): the same lock the streams use,
/// which ThreadSanitizer sees (Synchronization's `Mutex` waits on a futex it does not).
final class LockedWaiters: @unchecked Sendable {
    private let lock = PthreadLock()
    /// Guarded by `lock`.
    private var queue: [AsyncWaiter] = []

    func withLock<Result>(_ body: (inout [AsyncWaiter]) -> Result) -> Result {
        lock.lock()
        defer { lock.unlock() }
        return body(&queue)
    }
}

// StreamStateMachine driven directly: no lock, no threads. Each test runs transitions and
// checks the returned action, the buffer (which items survive, in which order) and the
// counters; `step` re-checks the invariants after every transition.
import XCTest
@testable import BPStreamCore

private typealias Machine = StreamStateMachine<Int>

// MARK: - Actions as comparable text

private func describe(_ action: Machine.PutAction) -> String {
    switch action {
    case .stored(let wake): return "stored(wakeConsumer: \(wake))"
    case .storedEvicting(let item, let wake): return "storedEvicting(\(item), wakeJoiners: \(wake))"
    case .storedClearing(let items, let wake):
        return "storedClearing(\(Array(items)), wakeJoiners: \(wake))"
    case .shed: return "shed"
    case .mustWait: return "mustWait"
    case .rejected: return "rejected"
    case .closed: return "closed"
    case .noMemory: return "noMemory"
    }
}

private func describe(_ action: Machine.GetAction) -> String {
    switch action {
    case .item(let item, let wake): return "item(\(item), wakeProducer: \(wake))"
    case .mustWait: return "mustWait"
    case .closed(nil): return "closed"
    case .closed(let failure?): return "failed(\(failure.code), \(failure.message))"
    }
}

private func describe(_ action: Machine.TakeAction) -> String {
    switch action {
    case .took(let count, let wake): return "took(\(count), wakeProducers: \(wake))"
    case .mustWait: return "mustWait"
    case .closed(nil): return "closed"
    case .closed(let failure?): return "failed(\(failure.code), \(failure.message))"
    }
}

private func describe(_ action: Machine.SettleAction) -> String {
    "settled(discarded: \(action.discarded), wakeProducers: \(action.wakeProducers), "
        + "wakeConsumers: \(action.wakeConsumers), wakeJoiners: \(action.wakeJoiners))"
}

private func describe(_ action: Machine.TaskDoneAction) -> String {
    switch action {
    case .done(let wake): return "done(wakeJoiners: \(wake))"
    case .tooMany: return "tooMany"
    }
}

// MARK: - Invariants

/// Checks what must hold between any two transitions.
private func assertInvariants(
    _ machine: Machine, _ context: @autoclosure () -> String = "",
    file: StaticString = #filePath, line: UInt = #line
) {
    let c = machine.counters
    XCTAssertEqual(machine.depth, machine.buffer.count + machine.reserved, file: file, line: line)
    let depth = UInt64(machine.depth)
    XCTAssertEqual(c.produced, c.consumed + c.dropped + depth,
                   "identity broken \(context()): \(c), depth \(depth)", file: file, line: line)
    XCTAssertGreaterThanOrEqual(c.peakDepth, depth, "peakDepth below depth \(context())",
                                file: file, line: line)
    XCTAssertGreaterThanOrEqual(machine.waitingProducers, 0, file: file, line: line)
    XCTAssertGreaterThanOrEqual(machine.waitingConsumers, 0, file: file, line: line)
    if !machine.discardsBacklog {
        // Room for the whole depth: reserved items handed back never need an allocation.
        XCTAssertGreaterThanOrEqual(machine.buffer.capacity, machine.depth,
                                    "ring smaller than the depth \(context())", file: file, line: line)
    }
}

private func makeMachine(_ capacity: Int?, _ policy: OverflowPolicy) -> Machine {
    Machine(capacity: capacity, policy: policy, now: 0)
}

/// Puts `items`, checking invariants after each, and returns the actions as text.
@discardableResult
private func putAll(_ machine: inout Machine, _ items: [Int],
                    file: StaticString = #filePath, line: UInt = #line) -> [String] {
    items.map { item in
        let action = describe(machine.put(item))
        assertInvariants(machine, "after put(\(item))", file: file, line: line)
        return action
    }
}

/// Gets until `mustWait`/`closed`, checking invariants after each; returns the items.
private func drain(_ machine: inout Machine,
                   file: StaticString = #filePath, line: UInt = #line) -> [Int] {
    var items: [Int] = []
    while case .item(let item, _) = machine.get() {
        items.append(item)
        assertInvariants(machine, "after get", file: file, line: line)
    }
    return items
}

/// machine.take(into:) with an array: the items taken are appended to `sink`.
@discardableResult
private func take(
    _ machine: inout StreamStateMachine<Int>, upTo maxCount: Int, reserving: Bool = false,
    now: Int64 = 0, into sink: inout [Int]
) -> StreamStateMachine<Int>.TakeAction {
    let target = UnsafeMutableBufferPointer<Int>.allocate(capacity: maxCount)
    defer { target.deallocate() }
    let action = machine.take(into: target, reserving: reserving, now: now)
    if case .took(let count, _) = action { sink.append(contentsOf: target[..<count]) }
    return action
}

@discardableResult
private func take(
    _ machine: inout StreamStateMachine<Int>, upTo maxCount: Int, reserving: Bool = false,
    now: Int64 = 0
) -> StreamStateMachine<Int>.TakeAction {
    var sink: [Int] = []
    return take(&machine, upTo: maxCount, reserving: reserving, now: now, into: &sink)
}

final class StreamStateMachineTests: XCTestCase {

    // MARK: creation

    func testNewMachineIsEmptyOpenAndZeroed() {
        var machine = makeMachine(4, .block)
        XCTAssertEqual(machine.capacity, 4)
        XCTAssertFalse(machine.isClosed)
        XCTAssertEqual(machine.counters, StreamStats())
        XCTAssertEqual(describe(machine.get()), "mustWait")
        XCTAssertEqual(describe(take(&machine, upTo: 3)), "mustWait")
        assertInvariants(machine)
    }

    func testUnboundedMachineNeverFills() {
        var machine = makeMachine(nil, .reject)
        XCTAssertEqual(machine.capacity, Int.max)
        let actions = putAll(&machine, Array(0..<5_000))
        XCTAssertEqual(Set(actions), ["stored(wakeConsumer: false)"])
        XCTAssertEqual(machine.counters.rejected, 0)
        XCTAssertEqual(machine.counters.peakDepth, 5_000)
        XCTAssertNil(machine.snapshot(now: 1).capacity)
        XCTAssertEqual(drain(&machine), Array(0..<5_000))
    }

    // MARK: put and get

    func testPutGetIsFIFOAndCounts() {
        var machine = makeMachine(3, .block)
        XCTAssertEqual(putAll(&machine, [10, 20, 30]), Array(repeating: "stored(wakeConsumer: false)", count: 3))
        XCTAssertEqual(machine.counters.produced, 3)
        XCTAssertEqual(machine.counters.unfinishedTasks, 3)
        XCTAssertEqual(machine.counters.peakDepth, 3)
        XCTAssertEqual(drain(&machine), [10, 20, 30])
        XCTAssertEqual(machine.counters.consumed, 3)
        XCTAssertEqual(machine.counters.unfinishedTasks, 3, "a get does not finish a task")
        XCTAssertEqual(machine.counters.peakDepth, 3, "peak survives draining")
        XCTAssertEqual(describe(machine.get()), "mustWait")
    }

    func testPutAsksToWakeAConsumerOnlyWhenOneWaits() {
        var machine = makeMachine(2, .block)
        XCTAssertEqual(describe(machine.put(1)), "stored(wakeConsumer: false)")
        _ = machine.get()
        machine.consumerWillWait()
        XCTAssertEqual(machine.waitingConsumers, 1)
        XCTAssertEqual(machine.counters.consumerWaits, 1)
        XCTAssertEqual(describe(machine.put(2)), "stored(wakeConsumer: true)")
        XCTAssertEqual(describe(machine.get()), "item(2, wakeProducer: false)")
        machine.consumerDidWait(nanoseconds: 1_500)
        XCTAssertEqual(machine.waitingConsumers, 0)
        XCTAssertEqual(machine.counters.consumerWaitNanoseconds, 1_500)
        machine.consumerWillWait()
        machine.consumerDidWait(nanoseconds: -99)  // a clock going backwards adds nothing
        XCTAssertEqual(machine.counters.consumerWaitNanoseconds, 1_500)
        XCTAssertEqual(machine.counters.consumerWaits, 2)
        XCTAssertEqual(describe(machine.put(3)), "stored(wakeConsumer: false)")
        assertInvariants(machine)
    }

    // MARK: every policy on a full buffer

    func testBlockPolicyFullBufferMustWaitAndChangesNothing() {
        var machine = makeMachine(2, .block)
        putAll(&machine, [1, 2])
        let before = machine.counters
        XCTAssertEqual(describe(machine.put(3)), "mustWait")
        XCTAssertEqual(machine.counters, before, "mustWait counts nothing by itself")
        XCTAssertEqual(Array(machine.buffer), [1, 2])

        // The storage class parks: one wait, one backpressure event.
        machine.producerWillWait()
        XCTAssertEqual(machine.waitingProducers, 1)
        XCTAssertEqual(machine.counters.producerWaits, 1)
        XCTAssertEqual(machine.counters.backpressureEvents, 1)
        XCTAssertEqual(describe(machine.put(3)), "mustWait", "still full while parked")
        XCTAssertEqual(describe(machine.get()), "item(1, wakeProducer: true)")
        XCTAssertEqual(describe(machine.put(3)), "stored(wakeConsumer: false)")
        machine.producerDidWait(nanoseconds: 2_000)
        XCTAssertEqual(machine.waitingProducers, 0)
        XCTAssertEqual(machine.counters.producerWaitNanoseconds, 2_000)
        XCTAssertEqual(Array(machine.buffer), [2, 3])
        XCTAssertEqual(machine.counters.rejected, 0)
        assertInvariants(machine)

        // A put that gives up (timeout, or not allowed to wait) counts as rejected.
        XCTAssertEqual(describe(machine.put(4)), "mustWait")
        machine.producerGaveUp()
        XCTAssertEqual(machine.counters.rejected, 1)
        XCTAssertEqual(machine.counters.produced, 3)
        XCTAssertEqual(Array(machine.buffer), [2, 3])
        assertInvariants(machine)
    }

    func testRejectPolicyFullBufferRejectsAndKeepsBacklog() {
        var machine = makeMachine(2, .reject)
        XCTAssertEqual(putAll(&machine, [1, 2, 3, 4]),
                       ["stored(wakeConsumer: false)", "stored(wakeConsumer: false)", "rejected", "rejected"])
        XCTAssertEqual(Array(machine.buffer), [1, 2])
        XCTAssertEqual(machine.counters.rejected, 2)
        XCTAssertEqual(machine.counters.produced, 2, "a rejected put is not produced")
        XCTAssertEqual(machine.counters.dropped, 0)
        XCTAssertEqual(machine.counters.backpressureEvents, 0)
        XCTAssertEqual(machine.counters.unfinishedTasks, 2)
        XCTAssertEqual(drain(&machine), [1, 2])
    }

    func testDropNewestShedsIncomingAndKeepsBacklogOrder() {
        var machine = makeMachine(3, .dropNewest)
        XCTAssertEqual(putAll(&machine, [1, 2, 3, 4, 5]).suffix(2), ["shed", "shed"])
        XCTAssertEqual(Array(machine.buffer), [1, 2, 3])
        let c = machine.counters
        XCTAssertEqual(c.produced, 5, "shed items count as produced")
        XCTAssertEqual(c.droppedShed, 2)
        XCTAssertEqual(c.dropped, 2)
        XCTAssertEqual(c.backpressureEvents, 2)
        XCTAssertEqual(c.rejected, 0)
        XCTAssertEqual(c.unfinishedTasks, 3, "shed items never become tasks")
        XCTAssertEqual(c.peakDepth, 3)
        XCTAssertEqual(drain(&machine), [1, 2, 3])
    }

    func testDropOldestEvictsFrontOneAtATime() {
        var machine = makeMachine(3, .dropOldest)
        XCTAssertEqual(putAll(&machine, [1, 2, 3, 4, 5]).suffix(2),
                       ["storedEvicting(1, wakeJoiners: false)", "storedEvicting(2, wakeJoiners: false)"])
        XCTAssertEqual(Array(machine.buffer), [3, 4, 5])
        let c = machine.counters
        XCTAssertEqual(c.produced, 5)
        XCTAssertEqual(c.droppedEvicted, 2)
        XCTAssertEqual(c.backpressureEvents, 2)
        XCTAssertEqual(c.unfinishedTasks, 3, "an eviction finishes the evicted item's task")
        XCTAssertEqual(c.peakDepth, 3)
        XCTAssertEqual(drain(&machine), [3, 4, 5])
    }

    func testDropAllClearsBacklogThenStores() {
        var machine = makeMachine(3, .dropAll)
        XCTAssertEqual(putAll(&machine, [1, 2, 3, 4]).last, "storedClearing([1, 2, 3], wakeJoiners: false)")
        XCTAssertEqual(Array(machine.buffer), [4])
        XCTAssertEqual(putAll(&machine, [5, 6, 7]).last, "storedClearing([4, 5, 6], wakeJoiners: false)")
        XCTAssertEqual(Array(machine.buffer), [7])
        let c = machine.counters
        XCTAssertEqual(c.produced, 7)
        XCTAssertEqual(c.droppedCleared, 6)
        XCTAssertEqual(c.backpressureEvents, 2, "one event per clearing put, not per item")
        XCTAssertEqual(c.unfinishedTasks, 1)
        XCTAssertEqual(c.peakDepth, 3)
        XCTAssertEqual(drain(&machine), [7])
    }

    func testFinishingTasksWakesJoinersOnlyAtZeroWithJoinersParked() {
        var machine = makeMachine(2, .dropAll)
        putAll(&machine, [1, 2])
        XCTAssertFalse(machine.finishTasks(2), "zero, but nobody joined")
        putAll(&machine, [3, 4])
        machine.waitingJoiners = 1
        XCTAssertFalse(machine.finishTasks(1), "one task still open")
        XCTAssertTrue(machine.finishTasks(1))
        XCTAssertFalse(machine.finishTasks(0), "finishing nothing wakes nobody")
        _ = machine.finishTasks(5)
        XCTAssertEqual(machine.counters.unfinishedTasks, 0, "clamped, never wraps")
    }

    // MARK: batch store

    func testStoreIfRoomStoresTheLongestPrefixThatFits() {
        var machine = makeMachine(5, .dropOldest)
        putAll(&machine, [1, 2])
        XCTAssertEqual(machine.storeIfRoom(contentsOf: [3, 4, 5, 6, 7]), 3, "room for 3 of 5")
        XCTAssertEqual(Array(machine.buffer), [1, 2, 3, 4, 5])
        XCTAssertEqual(machine.counters.produced, 5)
        XCTAssertEqual(machine.counters.unfinishedTasks, 5)
        XCTAssertEqual(machine.counters.peakDepth, 5)
        XCTAssertEqual(machine.storeIfRoom(contentsOf: [6]), 0, "full: never evicts, the caller's put decides")
        XCTAssertEqual(machine.counters.droppedEvicted, 0)
        var got: [Int] = []
        take(&machine, upTo: 2, reserving: true, into: &got)
        XCTAssertEqual(machine.storeIfRoom(contentsOf: [6]), 0, "reserved items hold their room")
        XCTAssertEqual(machine.storeIfRoom(contentsOf: [Int]()), 0)
        _ = machine.close(immediate: false)
        _ = machine.settle(delivered: 2, returned: [])
        XCTAssertEqual(machine.storeIfRoom(contentsOf: [6]), 0, "closed")
        XCTAssertEqual(machine.counters.produced, 5)
        assertInvariants(machine)
    }

    // MARK: take

    func testTakeTakesOldestFirstUpToTheLimit() {
        var machine = makeMachine(5, .block)
        putAll(&machine, [1, 2, 3, 4])
        var sink: [Int] = []
        XCTAssertEqual(describe(take(&machine, upTo: 3, into: &sink)), "took(3, wakeProducers: false)")
        XCTAssertEqual(sink, [1, 2, 3])
        XCTAssertEqual(machine.counters.consumed, 3)
        assertInvariants(machine)
        XCTAssertEqual(describe(take(&machine, upTo: 10, into: &sink)), "took(1, wakeProducers: false)")
        XCTAssertEqual(sink, [1, 2, 3, 4])
        XCTAssertEqual(describe(take(&machine, upTo: 10)), "mustWait")
        _ = machine.close(immediate: false)
        XCTAssertEqual(describe(take(&machine, upTo: 10)), "closed")
        assertInvariants(machine)
    }

    func testTakeWakesProducersOnlyWhenParkedAndRoomMade() {
        var machine = makeMachine(2, .block)
        putAll(&machine, [1, 2])
        machine.producerWillWait()
        XCTAssertEqual(describe(take(&machine, upTo: 1)), "took(1, wakeProducers: true)")
        machine.producerDidWait(nanoseconds: 0)
        XCTAssertEqual(describe(take(&machine, upTo: 1)), "took(1, wakeProducers: false)")
    }

    // MARK: close

    func testCloseDrainsThenReportsClosedAndRefusesPuts() {
        var machine = makeMachine(4, .block)
        putAll(&machine, [1, 2])
        let action = machine.close(immediate: false)
        XCTAssertTrue(action.discarded.isEmpty)
        XCTAssertFalse(action.wakeAll, "nobody parked")
        XCTAssertTrue(machine.isClosed)
        let before = machine.counters
        XCTAssertEqual(describe(machine.put(3)), "closed")
        XCTAssertEqual(machine.counters, before, "a put on a closed stream counts nothing")
        XCTAssertEqual(drain(&machine), [1, 2])
        XCTAssertEqual(describe(machine.get()), "closed")
        XCTAssertEqual(machine.counters.droppedOnClose, 0)
        XCTAssertTrue(machine.snapshot(now: 1).isClosed)
        assertInvariants(machine)
    }

    func testCloseWithFailureDrainsThenReportsTheFailure() {
        var machine = makeMachine(4, .block)
        putAll(&machine, [1, 2])
        let failure = ProducerFailure(code: 5, message: "EIO")
        XCTAssertTrue(machine.close(immediate: false, failure: failure).discarded.isEmpty)
        XCTAssertEqual(machine.failure, failure)
        XCTAssertEqual(describe(machine.put(3)), "closed", "puts see a plain close")
        XCTAssertEqual(describe(machine.get()), "item(1, wakeProducer: false)")
        var taken: [Int] = []
        XCTAssertEqual(describe(take(&machine, upTo: 5, into: &taken)), "took(1, wakeProducers: false)")
        XCTAssertEqual(taken, [2])
        XCTAssertEqual(describe(machine.get()), "failed(5, EIO)")
        XCTAssertEqual(describe(machine.get()), "failed(5, EIO)", "every get after the drain")
        XCTAssertEqual(describe(take(&machine, upTo: 5)), "failed(5, EIO)")
        assertInvariants(machine)
    }

    func testOnlyTheClosingCloseRecordsAFailure() {
        var plain = makeMachine(4, .block)
        _ = plain.close(immediate: false)
        _ = plain.close(immediate: false, failure: ProducerFailure(code: 1, message: "late"))
        XCTAssertNil(plain.failure)
        XCTAssertEqual(describe(plain.get()), "closed")

        var failed = makeMachine(4, .block)
        putAll(&failed, [1, 2])
        _ = failed.close(immediate: false, failure: ProducerFailure(code: 2, message: "first"))
        let action = failed.close(immediate: true, failure: ProducerFailure(code: 3, message: "second"))
        XCTAssertEqual(Array(action.discarded), [1, 2])
        XCTAssertEqual(failed.failure, ProducerFailure(code: 2, message: "first"))
        XCTAssertEqual(describe(failed.get()), "failed(2, first)")
        assertInvariants(failed)
    }

    func testEveryPolicyRefusesPutsOnceClosedEvenWhenFull() {
        for policy in OverflowPolicy.allCases {
            var machine = makeMachine(1, policy)
            _ = machine.put(1)
            _ = machine.close(immediate: false)
            let before = machine.counters
            XCTAssertEqual(describe(machine.put(2)), "closed", "\(policy)")
            XCTAssertEqual(machine.counters, before, "\(policy)")
            XCTAssertEqual(Array(machine.buffer), [1], "\(policy)")
        }
    }

    func testImmediateCloseDiscardsBacklogAndFinishesItsTasks() {
        var machine = makeMachine(8, .block)
        putAll(&machine, [1, 2, 3, 4])
        _ = machine.get()  // 1 consumed but not marked done: its task stays unfinished
        machine.waitingJoiners = 1
        let action = machine.close(immediate: true)
        XCTAssertEqual(Array(action.discarded), [2, 3, 4], "oldest first")
        XCTAssertTrue(action.wakeAll)
        XCTAssertTrue(machine.buffer.isEmpty)
        XCTAssertEqual(machine.counters.droppedOnClose, 3)
        XCTAssertEqual(machine.counters.dropped, 3)
        XCTAssertEqual(machine.counters.unfinishedTasks, 1)
        XCTAssertEqual(describe(machine.get()), "closed")
        assertInvariants(machine)
    }

    func testSecondCloseCanStillDiscard() {
        var machine = makeMachine(8, .dropOldest)
        putAll(&machine, [1, 2, 3])
        XCTAssertTrue(machine.close(immediate: false).discarded.isEmpty)
        XCTAssertEqual(Array(machine.close(immediate: true).discarded), [1, 2, 3])
        XCTAssertTrue(machine.close(immediate: true).discarded.isEmpty, "nothing left to discard")
        XCTAssertEqual(machine.counters.droppedOnClose, 3)
        XCTAssertEqual(machine.counters.unfinishedTasks, 0)
        assertInvariants(machine)
    }

    func testCloseAsksToWakeWhenAnyoneIsParked() {
        var producers = makeMachine(1, .block)
        producers.producerWillWait()
        XCTAssertTrue(producers.close(immediate: false).wakeAll)

        var consumers = makeMachine(1, .block)
        consumers.consumerWillWait()
        XCTAssertTrue(consumers.close(immediate: false).wakeAll)

        var joiners = makeMachine(1, .block)
        joiners.waitingJoiners = 1
        XCTAssertTrue(joiners.close(immediate: false).wakeAll)
    }

    // MARK: tasks

    func testTaskDoneTooManyChangesNothing() {
        var machine = makeMachine(4, .block)
        putAll(&machine, [1, 2])
        XCTAssertEqual(describe(machine.taskDone(3)), "tooMany")
        XCTAssertEqual(machine.counters.unfinishedTasks, 2)
        XCTAssertEqual(describe(machine.taskDone(1)), "done(wakeJoiners: false)")
        machine.waitingJoiners = 1
        XCTAssertEqual(describe(machine.taskDone(2)), "tooMany")
        XCTAssertEqual(describe(machine.taskDone(1)), "done(wakeJoiners: true)")
        XCTAssertEqual(machine.counters.unfinishedTasks, 0)
        XCTAssertEqual(describe(machine.taskDone(1)), "tooMany")
        XCTAssertEqual(describe(machine.taskDone(0)), "done(wakeJoiners: false)")
        XCTAssertEqual(Array(machine.buffer), [1, 2], "task accounting never touches items")
        assertInvariants(machine)
    }

    // MARK: capacity

    func testShrinkingBelowDepthKeepsItemsAndBlocksUntilUnderNewBound() {
        var machine = makeMachine(4, .block)
        putAll(&machine, [1, 2, 3, 4])
        XCTAssertFalse(machine.setCapacity(2))
        XCTAssertEqual(Array(machine.buffer), [1, 2, 3, 4], "shrinking drops nothing")
        XCTAssertEqual(describe(machine.put(5)), "mustWait")
        machine.producerWillWait()
        XCTAssertEqual(describe(machine.get()), "item(1, wakeProducer: false)", "3 left, bound 2")
        XCTAssertEqual(describe(machine.get()), "item(2, wakeProducer: false)", "2 left, bound 2")
        XCTAssertEqual(describe(machine.put(5)), "mustWait")
        XCTAssertEqual(describe(machine.get()), "item(3, wakeProducer: true)", "1 left: room")
        XCTAssertEqual(describe(machine.put(5)), "stored(wakeConsumer: false)")
        XCTAssertEqual(Array(machine.buffer), [4, 5])
        XCTAssertEqual(machine.counters.peakDepth, 4)
        assertInvariants(machine)
    }

    func testShrinkingUnderDropPoliciesNeverGrowsTheExcess() {
        var oldest = makeMachine(4, .dropOldest)
        putAll(&oldest, [1, 2, 3, 4])
        _ = oldest.setCapacity(2)
        XCTAssertEqual(describe(oldest.put(5)), "storedEvicting(1, wakeJoiners: false)")
        XCTAssertEqual(Array(oldest.buffer), [2, 3, 4, 5], "one in, one out")

        var newest = makeMachine(4, .dropNewest)
        putAll(&newest, [1, 2, 3, 4])
        _ = newest.setCapacity(2)
        XCTAssertEqual(describe(newest.put(5)), "shed")
        XCTAssertEqual(Array(newest.buffer), [1, 2, 3, 4])

        var all = makeMachine(4, .dropAll)
        putAll(&all, [1, 2, 3, 4])
        _ = all.setCapacity(2)
        XCTAssertEqual(describe(all.put(5)), "storedClearing([1, 2, 3, 4], wakeJoiners: false)")
        XCTAssertEqual(Array(all.buffer), [5])

        var reject = makeMachine(4, .reject)
        putAll(&reject, [1, 2, 3, 4])
        _ = reject.setCapacity(2)
        XCTAssertEqual(describe(reject.put(5)), "rejected")
        XCTAssertEqual(Array(reject.buffer), [1, 2, 3, 4])

        for machine in [oldest, newest, all, reject] { assertInvariants(machine) }
    }

    func testGrowingWakesParkedProducersOnlyWhenThereIsRoom() {
        var machine = makeMachine(2, .block)
        putAll(&machine, [1, 2])
        XCTAssertFalse(machine.setCapacity(3), "room, but nobody parked")
        XCTAssertEqual(describe(machine.put(3)), "stored(wakeConsumer: false)")
        machine.producerWillWait()
        XCTAssertFalse(machine.setCapacity(3), "parked, but no room")
        XCTAssertTrue(machine.setCapacity(5))
        XCTAssertTrue(machine.setCapacity(Int.max), "unbounded")
        XCTAssertNil(machine.snapshot(now: 1).capacity)
        machine.producerDidWait(nanoseconds: 0)
        XCTAssertEqual(Set(putAll(&machine, Array(4..<100))), ["stored(wakeConsumer: false)"])
        XCTAssertEqual(machine.counters.peakDepth, 99)
    }

    // MARK: snapshot and rates

    func testSnapshotReportsDepthCapacityAndCounters() {
        var machine = makeMachine(3, .dropNewest)
        putAll(&machine, [1, 2, 3, 4])
        _ = machine.get()
        let stats = machine.snapshot(now: 1)
        XCTAssertEqual(stats.depth, 2)
        XCTAssertEqual(stats.capacity, 3)
        XCTAssertEqual(stats.produced, 4)
        XCTAssertEqual(stats.consumed, 1)
        XCTAssertEqual(stats.droppedShed, 1)
        XCTAssertEqual(stats.peakDepth, 3)
        XCTAssertFalse(stats.isClosed)
        XCTAssertTrue(stats.identityHolds)
        XCTAssertIdentity(stats)
    }

    func testRatesSpanAtLeastOneWindowOnceTheStreamIsOlder() {
        let ms: Int64 = 1_000_000
        var machine = Machine(capacity: nil, policy: .block, now: 0)
        putAll(&machine, Array(0..<10))
        // Younger than a window: from creation to now.
        var stats = machine.snapshot(now: 500 * ms)
        XCTAssertEqual(stats.producedPerSecond, 20, accuracy: 1e-9)  // 10 in 0.5 s
        XCTAssertEqual(stats.consumedPerSecond, 0)
        XCTAssertEqual(stats.windowSeconds, 0.5, accuracy: 1e-9)

        putAll(&machine, Array(10..<20))
        _ = drain(&machine)
        stats = machine.snapshot(now: 1_000 * ms)
        XCTAssertEqual(stats.producedPerSecond, 20, accuracy: 1e-9)  // 20 in 1 s
        XCTAssertEqual(stats.consumedPerSecond, 20, accuracy: 1e-9)
        XCTAssertEqual(stats.windowSeconds, 1, accuracy: 1e-9)

        // Samples at 0, 0.5 and 1 s: at 1.25 s the newest one a window old is still 0 s.
        stats = machine.snapshot(now: 1_250 * ms)
        XCTAssertEqual(stats.windowSeconds, 1.25, accuracy: 1e-9)
        XCTAssertEqual(stats.producedPerSecond, 16, accuracy: 1e-9)
        XCTAssertEqual(stats.consumedPerSecond, 16, accuracy: 1e-9)

        // At 1.6 s it is the 0.5 s sample (10 produced, 0 consumed): the window slid.
        stats = machine.snapshot(now: 1_600 * ms)
        XCTAssertEqual(stats.windowSeconds, 1.1, accuracy: 1e-9)
        XCTAssertEqual(stats.producedPerSecond, 10 / 1.1, accuracy: 1e-9)
        XCTAssertEqual(stats.consumedPerSecond, 20 / 1.1, accuracy: 1e-9)

        // A quiet spell reads as a zero rate over a long span, never as noise.
        stats = machine.snapshot(now: 60_000 * ms)
        XCTAssertGreaterThanOrEqual(stats.windowSeconds, 1)
        XCTAssertEqual(stats.producedPerSecond, 0)
        XCTAssertEqual(stats.consumedPerSecond, 0)
    }

    func testRatesAreZeroNotNegativeWhenNowPrecedesTheLastSample() {
        var machine = Machine(capacity: 4, policy: .block, now: 5_000_000_000)
        putAll(&machine, [1, 2])
        let stats = machine.snapshot(now: 1_000)
        XCTAssertEqual(stats.producedPerSecond, 0)
        XCTAssertEqual(stats.consumedPerSecond, 0)
        XCTAssertEqual(stats.windowSeconds, 0)
    }

    // MARK: reserve and settle

    /// Takes up to `count` items as reserved; returns them.
    private func reserve(_ machine: inout Machine, _ count: Int) -> [Int] {
        var items: [Int] = []
        take(&machine, upTo: count, reserving: true, into: &items)
        return items
    }

    func testProducersOnTheirRecheckTimerAreWokenOnlyIfTheyCannotKeepUp() {
        // 1,000 items stay buffered and a producer is parked on its recheck timer. Whether
        // handing out or settling a reservation signals it depends on the consumer's pace
        // (the time between reservations per item): if the buffer outlasts two rechecks,
        // the producer is left to its timer and the consumer spared the wake-up.
        func parkedProducer(consumerPace nanosecondsPerItem: Int64) -> Machine {
            var machine = makeMachine(2_000, .block)
            putAll(&machine, Array(0..<1_100))
            machine.producerWillWait()
            machine.recheckingProducers = 1
            machine.longestRecheck = StreamStateMachine<Int>.reservedRecheck
            take(&machine, upTo: 50, reserving: true, now: 1_000)
            take(&machine, upTo: 50, reserving: true, now: 1_000 + 50 * nanosecondsPerItem)
            XCTAssertEqual(machine.nanosecondsPerReservedItem, nanosecondsPerItem)
            XCTAssertEqual(machine.buffer.count, 1_000)
            return machine
        }
        let recheck = StreamStateMachine<Int>.reservedRecheck
        // 1 µs an item: the buffer lasts 1 ms, ten rechecks.
        var slow = parkedProducer(consumerPace: 1_000)
        XCTAssertTrue(slow.rechecksKeepUp)
        XCTAssertFalse(slow.producersNeedWaking)
        XCTAssertEqual(describe(take(&slow, upTo: 1, reserving: true, now: 200_000)),
                       "took(1, wakeProducers: false)")
        XCTAssertFalse(slow.settle(delivered: 100, returned: []).wakeProducers,
                       "settled room is found by the producer's own recheck")
        // Fast enough to empty the buffer within two rechecks: woken, as a plain wait is.
        var fast = parkedProducer(consumerPace: recheck / 1_000)
        XCTAssertFalse(fast.rechecksKeepUp)
        XCTAssertTrue(fast.producersNeedWaking)
        XCTAssertTrue(fast.settle(delivered: 100, returned: []).wakeProducers)
        // A producer whose timer backed off to its limit needs ten times the buffer.
        var backedOff = parkedProducer(consumerPace: 1_000)
        backedOff.longestRecheck = StreamStateMachine<Int>.reservedRecheckLimit
        XCTAssertFalse(backedOff.rechecksKeepUp, "1,000 items at 1 µs do not last two 1 ms rechecks")
        XCTAssertTrue(backedOff.producersNeedWaking)
        // However slow the consumer, an empty buffer always wakes them.
        var idle = parkedProducer(consumerPace: 1_000_000_000)
        XCTAssertTrue(idle.rechecksKeepUp)
        var all: [Int] = []
        take(&idle, upTo: 2_000, into: &all)
        XCTAssertTrue(idle.buffer.isEmpty)
        XCTAssertFalse(idle.rechecksKeepUp)
        XCTAssertTrue(idle.producersNeedWaking)
        // A producer waiting without a timer is always woken.
        slow.recheckingProducers = 0
        slow.longestRecheck = 0
        XCTAssertTrue(slow.producersNeedWaking)
        XCTAssertTrue(slow.settle(delivered: 1, returned: []).wakeProducers)
        assertInvariants(slow)
    }

    func testReservedItemsStayInTheDepthAndHoldTheirRoom() {
        var machine = makeMachine(3, .block)
        putAll(&machine, [1, 2, 3])
        machine.producerWillWait()
        var got: [Int] = []
        XCTAssertEqual(describe(take(&machine, upTo: 2, reserving: true, into: &got)),
                       "took(2, wakeProducers: true)",
                       "reserving frees no room, but a parked producer must learn reservations are out")
        XCTAssertEqual(got, [1, 2])
        XCTAssertEqual(Array(machine.buffer), [3])
        XCTAssertEqual(machine.reserved, 2)
        XCTAssertEqual(machine.depth, 3)
        XCTAssertFalse(machine.storeIfRoom(4), "reserved items hold their room")
        XCTAssertEqual(machine.counters.consumed, 0, "not consumed until settled")
        XCTAssertEqual(machine.snapshot(now: 1).depth, 3)
        XCTAssertEqual(describe(machine.put(4)), "mustWait", "reserved items count against the capacity")
        assertInvariants(machine)

        let action = machine.settle(delivered: 2, returned: [])
        XCTAssertEqual(describe(action),
                       "settled(discarded: [], wakeProducers: true, wakeConsumers: false, wakeJoiners: false)")
        XCTAssertEqual(machine.reserved, 0)
        XCTAssertEqual(machine.counters.consumed, 2)
        XCTAssertEqual(describe(machine.put(4)), "stored(wakeConsumer: false)")
        machine.producerDidWait(nanoseconds: 0)
        assertInvariants(machine)
    }

    func testSettleHandsUndeliveredItemsBackToTheFront() {
        var machine = makeMachine(4, .block)
        putAll(&machine, [1, 2, 3, 4])
        XCTAssertEqual(reserve(&machine, 3), [1, 2, 3])
        machine.consumerWillWait()  // another consumer waits for items
        let action = machine.settle(delivered: 1, returned: [2, 3])
        XCTAssertEqual(describe(action),
                       "settled(discarded: [], wakeProducers: false, wakeConsumers: true, wakeJoiners: false)")
        machine.consumerDidWait(nanoseconds: 0)
        XCTAssertEqual(Array(machine.buffer), [2, 3, 4], "as if never taken, oldest first")
        XCTAssertEqual(machine.counters.consumed, 1)
        XCTAssertEqual(machine.reserved, 0)
        assertInvariants(machine)
        XCTAssertEqual(drain(&machine), [2, 3, 4])
    }

    func testSettleClampsToWhatIsReserved() {
        var machine = makeMachine(4, .block)
        putAll(&machine, [1, 2])
        _ = reserve(&machine, 2)
        XCTAssertEqual(machine.settleDelivered(5), 2)
        XCTAssertEqual(machine.settleDelivered(-3), 0)
        XCTAssertEqual(machine.counters.consumed, 2)
        XCTAssertEqual(machine.reserved, 0)
        assertInvariants(machine)
    }

    func testItemsHandedBackAfterAnImmediateCloseAreDiscarded() {
        var machine = makeMachine(4, .block)
        putAll(&machine, [1, 2, 3])
        _ = reserve(&machine, 2)
        machine.waitingJoiners = 1
        XCTAssertEqual(Array(machine.close(immediate: true).discarded), [3], "only what is buffered")
        XCTAssertEqual(machine.depth, 2, "reserved items are still out with the consumer")
        let action = machine.settle(delivered: 0, returned: [1, 2])
        XCTAssertEqual(action.discarded, [1, 2])
        XCTAssertTrue(action.wakeJoiners, "their tasks were the last unfinished ones")
        XCTAssertEqual(machine.counters.droppedOnClose, 3)
        XCTAssertEqual(machine.counters.unfinishedTasks, 0)
        XCTAssertEqual(machine.depth, 0)
        assertInvariants(machine)

        var plain = makeMachine(4, .block)
        putAll(&plain, [1, 2])
        _ = reserve(&plain, 1)
        _ = plain.close(immediate: false)
        XCTAssertEqual(plain.settle(delivered: 0, returned: [1]).discarded, [],
                       "after a plain close the backlog stays readable")
        XCTAssertEqual(drain(&plain), [1, 2])
        XCTAssertEqual(describe(plain.get()), "closed")
        assertInvariants(plain)
    }

    func testDropPoliciesShedWhenEverythingIsReserved() {
        for policy in [OverflowPolicy.dropOldest, .dropAll] {
            var machine = makeMachine(2, policy)
            putAll(&machine, [1, 2])
            _ = reserve(&machine, 2)
            XCTAssertEqual(describe(machine.put(3)), "shed", "\(policy): nothing buffered to evict")
            XCTAssertEqual(machine.counters.droppedShed, 1)
            XCTAssertEqual(machine.depth, 2, "\(policy): never above the capacity")
            assertInvariants(machine)
            _ = machine.settle(delivered: 1, returned: [2])
            XCTAssertEqual(describe(machine.put(4)), "stored(wakeConsumer: false)")
            XCTAssertEqual(describe(machine.put(5)), policy == .dropOldest
                           ? "storedEvicting(2, wakeJoiners: false)"
                           : "storedClearing([2, 4], wakeJoiners: false)")
            assertInvariants(machine)
        }
    }

    /// drop_all hands the backlog over with its storage and starts a fresh ring: the fresh
    /// one has room for the reserved items too, so handing them back allocates nothing.
    func testDropAllClearingLeavesRoomForReservedItemsHandedBack() {
        var machine = makeMachine(4, .dropAll)
        putAll(&machine, [1, 2, 3, 4])
        XCTAssertEqual(reserve(&machine, 2), [1, 2])
        XCTAssertEqual(describe(machine.put(5)), "storedClearing([3, 4], wakeJoiners: false)")
        assertInvariants(machine)
        let ringCapacity = machine.buffer.capacity
        XCTAssertGreaterThanOrEqual(ringCapacity, 3)
        _ = machine.settle(delivered: 0, returned: [1, 2])
        XCTAssertEqual(Array(machine.buffer), [1, 2, 5], "handed back to the front")
        XCTAssertEqual(machine.buffer.capacity, ringCapacity, "without growing")
        assertInvariants(machine)
    }

    // MARK: model check

    /// Random operation sequences against a plain-array model, for every policy: the same
    /// actions, the same surviving items in the same order, the same counters, and the
    /// invariants after every single step.
    func testRandomOperationsMatchAReferenceModel() {
        for policy in OverflowPolicy.allCases {
            for seed: UInt64 in 1...6 {
                runModelCheck(policy: policy, seed: seed &* 7919 &+ UInt64(policy.rawValue))
            }
        }
    }

    private func runModelCheck(policy: OverflowPolicy, seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        var capacity = Int.random(in: 1...5, using: &rng)
        var machine = makeMachine(capacity, policy)
        var model = StreamModel(capacity: capacity, policy: policy)
        var next = 0
        let steps = 1_500
        let closeAt = Int.random(in: steps / 2..<steps, using: &rng)
        for step in 0..<steps {
            let context = "policy \(policy), seed \(seed), step \(step)"
            switch Int.random(in: 0..<100, using: &rng) {
            case 0..<45:
                next += 1
                XCTAssertEqual(describe(machine.put(next)), model.put(next), context)
            case 45..<70:
                XCTAssertEqual(describe(machine.get()), model.get(), context)
            case 70..<80:
                let limit = Int.random(in: 1...4, using: &rng)
                var got: [Int] = []
                let action = describe(take(&machine, upTo: limit, into: &got))
                let (expectedAction, expectedItems) = model.take(limit)
                XCTAssertEqual(action, expectedAction, context)
                XCTAssertEqual(got, expectedItems, context)
            case 80..<85:
                let count = UInt64.random(in: 0...3, using: &rng)
                XCTAssertEqual(describe(machine.taskDone(count)), model.taskDone(count), context)
            case 85..<89:
                let limit = Int.random(in: 1...3, using: &rng)
                var got: [Int] = []
                let action = describe(take(&machine, upTo: limit, reserving: true, into: &got))
                let (expectedAction, expectedItems) = model.reserve(limit)
                XCTAssertEqual(action, expectedAction, context)
                XCTAssertEqual(got, expectedItems, context)
            case 89..<91:
                let delivered = Int.random(in: 0...model.reserved.count, using: &rng)
                let returned = Array(model.reserved[delivered...])
                let action = machine.settle(delivered: delivered, returned: returned)
                XCTAssertEqual(action.discarded, model.settle(delivered: delivered), context)
                XCTAssertFalse(action.wakeProducers || action.wakeConsumers || action.wakeJoiners, context)
            case 91..<97:
                capacity = Int.random(in: 1...6, using: &rng)
                XCTAssertFalse(machine.setCapacity(capacity), "nobody parked: \(context)")
                model.capacity = capacity
            default:
                if step >= closeAt || Int.random(in: 0..<50, using: &rng) == 0 {
                    let immediate = Bool.random(using: &rng)
                    let action = machine.close(immediate: immediate)
                    XCTAssertEqual(Array(action.discarded), model.close(immediate: immediate), context)
                    XCTAssertFalse(action.wakeAll, context)
                }
            }
            XCTAssertEqual(Array(machine.buffer), model.items, context)
            XCTAssertEqual(machine.reserved, model.reserved.count, context)
            XCTAssertEqual(machine.isClosed, model.closed, context)
            XCTAssertEqual(machine.counters, model.counters, context)
            assertInvariants(machine, context)
            // Stop at the first divergence: later steps would only repeat it.
            let c = machine.counters
            if c != model.counters || Array(machine.buffer) != model.items
                || machine.reserved != model.reserved.count
                || c.produced != c.consumed + c.dropped + UInt64(machine.depth) { return }
        }
    }
}

// MARK: - Reference model

/// The stream's semantics written as plainly as possible, for the model check.
private struct StreamModel {
    var items: [Int] = []
    /// Taken with `reserve`, not yet settled: out of `items`, still in the depth.
    var reserved: [Int] = []
    var capacity: Int
    let policy: OverflowPolicy
    var closed = false
    var discardsBacklog = false
    var depth: Int { items.count + reserved.count }
    var produced: UInt64 = 0, consumed: UInt64 = 0, rejected: UInt64 = 0
    var shed: UInt64 = 0, evicted: UInt64 = 0, cleared: UInt64 = 0, onClose: UInt64 = 0
    var unfinished: UInt64 = 0, peak: UInt64 = 0, backpressure: UInt64 = 0

    init(capacity: Int, policy: OverflowPolicy) {
        self.capacity = capacity
        self.policy = policy
    }

    private mutating func store(_ item: Int) {
        items.append(item)
        produced += 1
        unfinished += 1
        peak = max(peak, UInt64(depth))
    }

    private mutating func finish(_ count: Int) {
        unfinished -= min(UInt64(count), unfinished)
    }

    mutating func put(_ item: Int) -> String {
        if closed { return "closed" }
        if depth < capacity {
            store(item)
            return "stored(wakeConsumer: false)"
        }
        // Full and nothing buffered (all reserved): eviction is impossible, so drop
        // policies shed.
        let shedding = policy == .dropNewest
            || ((policy == .dropOldest || policy == .dropAll) && items.isEmpty)
        if shedding {
            produced += 1
            shed += 1
            backpressure += 1
            return "shed"
        }
        switch policy {
        case .block: return "mustWait"
        case .reject:
            rejected += 1
            return "rejected"
        case .dropNewest:
            preconditionFailure("handled above")
        case .dropOldest:
            let first = items.removeFirst()
            evicted += 1
            backpressure += 1
            finish(1)
            store(item)
            return "storedEvicting(\(first), wakeJoiners: false)"
        case .dropAll:
            let all = items
            items.removeAll()
            cleared += UInt64(all.count)
            backpressure += 1
            finish(all.count)
            store(item)
            return "storedClearing(\(all), wakeJoiners: false)"
        }
    }

    mutating func get() -> String {
        if items.isEmpty { return closed ? "closed" : "mustWait" }
        consumed += 1
        return "item(\(items.removeFirst()), wakeProducer: false)"
    }

    mutating func take(_ limit: Int) -> (String, [Int]) {
        if items.isEmpty { return (closed ? "closed" : "mustWait", []) }
        let count = min(limit, items.count)
        let taken = Array(items.prefix(count))
        items.removeFirst(count)
        consumed += UInt64(count)
        return ("took(\(count), wakeProducers: false)", taken)
    }

    mutating func reserve(_ limit: Int) -> (String, [Int]) {
        if items.isEmpty { return (closed ? "closed" : "mustWait", []) }
        let count = min(limit, items.count)
        let taken = Array(items.prefix(count))
        items.removeFirst(count)
        reserved += taken
        return ("took(\(count), wakeProducers: false)", taken)
    }

    /// The first `delivered` reserved items were consumed; the rest come back to the front
    /// (or are discarded after an immediate close). Returns the discarded ones.
    mutating func settle(delivered: Int) -> [Int] {
        consumed += UInt64(delivered)
        let returned = Array(reserved[delivered...])
        reserved = []
        if discardsBacklog {
            onClose += UInt64(returned.count)
            finish(returned.count)
            return returned
        }
        items = returned + items
        return []
    }

    mutating func taskDone(_ count: UInt64) -> String {
        if count > unfinished { return "tooMany" }
        unfinished -= count
        return "done(wakeJoiners: false)"
    }

    mutating func close(immediate: Bool) -> [Int] {
        closed = true
        guard immediate else { return [] }
        discardsBacklog = true
        let discarded = items
        items.removeAll()
        onClose += UInt64(discarded.count)
        finish(discarded.count)
        return discarded
    }

    /// The machine's counters as the model expects them (no waits happen here).
    var counters: StreamStats {
        var s = StreamStats()
        s.produced = produced
        s.consumed = consumed
        s.rejected = rejected
        s.droppedShed = shed
        s.droppedEvicted = evicted
        s.droppedCleared = cleared
        s.droppedOnClose = onClose
        s.unfinishedTasks = unfinished
        s.peakDepth = peak
        s.backpressureEvents = backpressure
        return s
    }
}

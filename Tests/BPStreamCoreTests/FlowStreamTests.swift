// Flow control on a live stream (FlowGate.swift): states follow every depth change, the
// throttle delay and the pause are observed by puts that may wait and never by those that
// may not, timeouts end a delay at the deadline, consumers and close release paused puts,
// listeners run in order and outside the lock, and pacing by a (fake) rate controller with
// an adaptive stream's feedback.
import Foundation
import XCTest
@testable import BPStreamCore

/// A rate controller the test steers: `tryAcquire` answers `allow`; `acquire` waits
/// `holdNanoseconds` (sleeping, no lock of the stream held) then grants, or times out when
/// the hold is longer than the timeout. Counts the stream's feedback.
final class FakeRate: RateController, @unchecked Sendable {
    let state = Locked((allow: true, hold: Int64(0), acquired: 0, successes: 0, backpressures: 0))
    var currentRate: Double { 123.5 }
    func tryAcquire(_ n: Int) -> Bool {
        state.withLock { s in
            if s.allow { s.acquired += n }
            return s.allow
        }
    }
    func acquire<Observer: WaitObserver>(
        _ n: Int, timeoutNanoseconds: Int64, observer: inout Observer
    ) -> RateAcquireOutcome {
        let hold = state.current.hold
        if timeoutNanoseconds >= 0 && hold > timeoutNanoseconds {
            Thread.sleep(forTimeInterval: Double(timeoutNanoseconds) / 1e9)
            return .timedOut
        }
        if hold > 0 { Thread.sleep(forTimeInterval: Double(hold) / 1e9) }
        state.withLock { $0.acquired += n }
        return .granted(waitedNanoseconds: hold)
    }
    func recordSuccess() { state.withLock { $0.successes += 1 } }
    func recordBackpressure() { state.withLock { $0.backpressures += 1 } }
}

final class FlowStreamTests: XCTestCase {
    func fill(_ stream: BoundedStream<Int>, to depth: Int) {
        var observer = NoWaitObserver()
        while stream.count < depth {
            XCTAssertEqual(stream.put(0, timeoutNanoseconds: 0, observer: &observer), .stored)
        }
    }

    func testStatesFollowEveryDepthChangeWithoutFlowControl() throws {
        let stream = try BoundedStream<Int>(capacity: 100, policy: .dropOldest)
        fill(stream, to: 69)
        XCTAssertEqual(stream.stats().flowState, .normal)
        fill(stream, to: 70)
        XCTAssertEqual(stream.flowState, .throttled)
        XCTAssertEqual(stream.stats().throttleDelay, 0)  // default min_delay at the mark
        fill(stream, to: 80)
        XCTAssertEqual(stream.stats().throttleDelay, 0.25, accuracy: 1e-9)
        fill(stream, to: 91)
        XCTAssertEqual(stream.flowState, .paused)
        XCTAssertEqual(stream.stats().throttleDelay, 0)
        // Without flow control nothing waits: a put with a long timeout stores at once.
        let before = monotonicSeconds()
        fill(stream, to: 100)
        try stream.put(1, timeout: .seconds(5))  // evicts
        XCTAssertLessThan(monotonicSeconds() - before, 1.0)
        XCTAssertEqual(stream.flowState, .dropping)
        _ = try stream.get(maxCount: 15)
        XCTAssertEqual(stream.flowState, .throttled)
        try stream.setCapacity(1000)
        XCTAssertEqual(stream.flowState, .normal)
        try stream.setCapacity(80)  // 85 of 80
        XCTAssertEqual(stream.flowState, .dropping)
        stream.close(immediate: true)
        XCTAssertEqual(stream.flowState, .normal)
        let stats = stream.stats()
        XCTAssertEqual(stats.throttleEvents, 1)  // NORMAL -> DROPPING is no throttle event
        XCTAssertEqual(stats.pauseEvents, 2)
        XCTAssertGreaterThan(stats.timePausedNanoseconds, 0)
        XCTAssertNil(stats.rateLimit)
    }

    func testReservedDeliveriesLowerTheStateOnceAbsorbed() throws {
        let flow = try FlowControl(minDelay: 0, maxDelay: 0)
        let stream = try BoundedStream<Int>(capacity: 10, flow: flow)
        fill(stream, to: 10)
        XCTAssertEqual(stream.flowState, .dropping)
        var observer = NoWaitObserver()
        let buffer = UnsafeMutableBufferPointer<Int>.allocate(capacity: 10)
        defer { buffer.deallocate() }
        guard case .success(let n) = stream.get(into: buffer, reserving: true, timeoutNanoseconds: 0,
                                                observer: &observer) else { return XCTFail() }
        XCTAssertEqual(n, 10)
        XCTAssertEqual(stream.flowState, .dropping)  // reserved items still count
        stream.markDelivered(5)  // the state is above NORMAL: settled at once
        XCTAssertEqual(stream.flowState, .normal)
        stream.settle(delivered: 5)
        XCTAssertEqual(stream.stats().depth, 0)
    }

    func testThrottleDelayIsObservedByPutsThatMayWaitOnly() throws {
        let flow = try FlowControl(minDelay: 0.2, maxDelay: 0.2)
        let stream = try BoundedStream<Int>(capacity: 10, flow: flow)
        fill(stream, to: 7)  // timeout 0: never delayed
        XCTAssertEqual(stream.flowState, .throttled)
        XCTAssertEqual(stream.stats().throttleDelay, 0.2, accuracy: 1e-9)
        var start = monotonicSeconds()
        try stream.put(1, timeout: .seconds(10))
        XCTAssertGreaterThanOrEqual(monotonicSeconds() - start, 0.19)
        start = monotonicSeconds()
        var observer = NoWaitObserver()
        XCTAssertEqual(stream.put(2, timeoutNanoseconds: 0, observer: &observer), .stored)
        XCTAssertLessThan(monotonicSeconds() - start, 0.15)
        XCTAssertEqual(stream.count, 9)
    }

    func testDelayLongerThanTheTimeoutFailsFullAtTheDeadline() throws {
        let flow = try FlowControl(minDelay: 5, maxDelay: 5)
        let stream = try BoundedStream<Int>(capacity: 10, flow: flow)
        fill(stream, to: 8)
        let start = monotonicSeconds()
        XCTAssertThrowsError(try stream.put(1, timeout: .milliseconds(200))) {
            XCTAssertEqual($0 as? StreamError, .full)
        }
        let took = monotonicSeconds() - start
        XCTAssertGreaterThanOrEqual(took, 0.19)
        XCTAssertLessThan(took, 4)
        XCTAssertEqual(stream.count, 8)
        XCTAssertEqual(stream.stats().rejected, 1)
    }

    func testCancelDuringADelayAndDuringAPause() throws {
        let flow = try FlowControl(minDelay: 5, maxDelay: 5)
        let stream = try BoundedStream<Int>(capacity: 10, flow: flow)
        fill(stream, to: 8)
        for depth in [8, 10] {
            fill(stream, to: depth)
            let log = HookLog()
            var observer = RecordingObserver(log: log, pollIntervalNanoseconds: 10_000_000, cancelOnPoll: 3,
                                             probe: { _ in _ = stream.stats() })  // no lock held
            XCTAssertEqual(stream.put(1, timeoutNanoseconds: -1, observer: &observer), .cancelled)
            XCTAssertEqual(log.violations.current, [])
            XCTAssertEqual(log.count("willWait"), 1)
            XCTAssertEqual(log.count("didWait"), 1)
            XCTAssertEqual(stream.count, depth)
        }
    }

    func testPauseIsReleasedByAConsumerAndByClose() throws {
        let flow = try FlowControl(minDelay: 0, maxDelay: 0)
        let stream = try BoundedStream<Int>(capacity: 100, flow: flow)
        fill(stream, to: 95)
        XCTAssertEqual(stream.flowState, .paused)
        let stored = Locked(false)
        let producer = TestThread { try? stream.put(7); stored.withLock { $0 = true } }
        Thread.sleep(forTimeInterval: 0.2)
        XCTAssertFalse(stored.current)
        XCTAssertEqual(stream.count, 95)
        for _ in 0..<4 { _ = try stream.get() }  // 91: still PAUSED
        Thread.sleep(forTimeInterval: 0.1)
        XCTAssertFalse(stored.current)
        _ = try stream.get()  // 90: THROTTLED, the producer goes on
        XCTAssertTrue(producer.join(timeout: 10))
        XCTAssertTrue(stored.current)
        XCTAssertEqual(stream.count, 91)

        let result = Locked<PutOutcome?>(nil)
        let second = TestThread {
            var observer = NoWaitObserver()
            let outcome = stream.put(8, timeoutNanoseconds: -1, observer: &observer)
            result.withLock { $0 = outcome }
        }
        Thread.sleep(forTimeInterval: 0.1)
        XCTAssertNil(result.current)
        stream.close()
        XCTAssertTrue(second.join(timeout: 10))
        XCTAssertEqual(result.current, .closed)
    }

    func testBlockWaitsInDroppingUntilTheStateFallsAndCountsAWait() throws {
        let flow = try FlowControl(minDelay: 0, maxDelay: 0)
        let stream = try BoundedStream<Int>(capacity: 10, flow: flow)
        fill(stream, to: 10)
        let producer = TestThread { try? stream.put(7) }
        Thread.sleep(forTimeInterval: 0.1)
        _ = try stream.get()  // 9 of 10: 0.9 is not above the pause mark: THROTTLED
        XCTAssertTrue(producer.join(timeout: 10))
        let stats = stream.stats()
        XCTAssertEqual(stats.depth, 10)
        XCTAssertEqual(stats.producerWaits, 1)
        XCTAssertEqual(stats.rejected, 0)
        // A dropping policy decides at once when full.
        let dropping = try BoundedStream<Int>(capacity: 10, policy: .dropNewest, flow: flow)
        fill(dropping, to: 10)
        XCTAssertFalse(try dropping.put(1, timeout: .seconds(5)))
    }

    func testBatchPutPassesTheGateOnce() throws {
        let flow = try FlowControl(minDelay: 0.2, maxDelay: 0.2)
        let stream = try BoundedStream<Int>(capacity: 100, flow: flow)
        fill(stream, to: 70)
        var observer = NoWaitObserver()
        let start = monotonicSeconds()
        let (taken, outcome) = stream.put(contentsOf: Array(0..<15), timeoutNanoseconds: -1, observer: &observer)
        let took = monotonicSeconds() - start
        XCTAssertEqual(taken, 15)
        XCTAssertEqual(outcome, .stored)
        XCTAssertGreaterThanOrEqual(took, 0.19)
        XCTAssertLessThan(took, 2.5)  // one delay, not fifteen
    }

    func testListenersRunInOrderOutsideTheLockAndMayCallBack() throws {
        let stream = try BoundedStream<Int>(capacity: 10)
        let seen = Locked([FlowTransition]())
        let listener = stream.onFlowChange { transition in
            _ = stream.stats()  // would deadlock under the lock
            _ = stream.count
            let first = seen.withLock { $0.append(transition); return $0.count == 2 }
            if first { _ = try? stream.get() }  // back into the stream, at DROPPING
        }
        fill(stream, to: 10)
        // 7: THROTTLED, 10: DROPPING -> the listener's get: 9 THROTTLED; fill puts the 10th.
        XCTAssertEqual(seen.current.map(\.new), [.throttled, .dropping, .throttled, .dropping])
        XCTAssertEqual(seen.current.map(\.fill), [0.7, 1.0, 0.9, 1.0])
        XCTAssertEqual(seen.current.map(\.old), [.normal, .throttled, .dropping, .throttled])
        stream.removeFlowListener(listener)
        _ = try stream.get(maxCount: 9)
        XCTAssertEqual(seen.current.count, 4)
        stream.removeFlowListener(listener)  // harmless
    }

    func testListenersSeeTransitionsOfManyThreadsInOrder() throws {
        let stream = try BoundedStream<Int>(capacity: 20)
        let seen = Locked([FlowTransition]())
        let listener = stream.onFlowChange { t in seen.withLock { $0.append(t) } }
        let threads = (0..<4).map { _ in
            TestThread {
                // A producer's own get never waits: the consumer may have drained the stream for
                // good (the other producers done), and a waiting get would then sit out its timeout.
                for i in 0..<2000 { try? stream.put(i, timeout: .seconds(10)); if i % 3 == 0 { _ = try? stream.get(timeout: .zero) } }
            }
        }
        // The consumer drains until the producers are done and the stream is closed.
        let consumer = TestThread { while (try? stream.get()) != nil {} }
        for t in threads { XCTAssertTrue(t.join(timeout: 120)) }
        stream.close()
        XCTAssertTrue(consumer.join(timeout: 60))
        // Each transition starts where the previous ended, and the last ends in the state now.
        let all = seen.current
        for (a, b) in zip(all, all.dropFirst()) { XCTAssertEqual(a.new, b.old) }
        XCTAssertEqual(all.last?.new ?? .normal, stream.flowState)
        let stats = stream.stats()
        XCTAssertEqual(UInt64(all.filter { $0.old == .normal && $0.new == .throttled }.count), stats.throttleEvents)
        XCTAssertEqual(UInt64(all.filter { $0.old < .paused && $0.new >= .paused }.count), stats.pauseEvents)
        stream.removeFlowListener(listener)
    }

    func testTimePausedRunsOnTheStreamsClock() throws {
        final class StepClock: ControlClock, @unchecked Sendable {
            let time = Locked(Int64(0))
            func now() -> Int64 { time.current }
        }
        let clock = StepClock()
        let stream = try BoundedStream<Int>(capacity: 10, clock: clock)
        fill(stream, to: 10)
        clock.time.withLock { $0 = 3_000_000_000 }
        XCTAssertEqual(stream.stats().timePausedNanoseconds, 3_000_000_000)
        _ = try stream.get(maxCount: 10)
        clock.time.withLock { $0 = 9_000_000_000 }
        XCTAssertEqual(stream.stats().timePausedNanoseconds, 3_000_000_000)
    }

    func testPacingByARateController() throws {
        let rate = FakeRate()
        let stream = try BoundedStream<Int>(capacity: 10, rate: rate)
        XCTAssertEqual(stream.stats().rateLimit, 123.5)
        var observer = NoWaitObserver()
        XCTAssertEqual(stream.put(1, timeoutNanoseconds: 0, observer: &observer), .stored)
        rate.state.withLock { $0.allow = false }
        XCTAssertEqual(stream.put(2, timeoutNanoseconds: 0, observer: &observer), .full)
        XCTAssertEqual(stream.stats().rejected, 1)
        rate.state.withLock { $0.hold = 100_000_000 }
        let start = monotonicSeconds()
        try stream.put(3, timeout: .seconds(5))
        XCTAssertGreaterThanOrEqual(monotonicSeconds() - start, 0.09)
        XCTAssertThrowsError(try stream.put(4, timeout: .milliseconds(20)))
        XCTAssertEqual(stream.stats().rejected, 2)
        rate.state.withLock { $0.hold = 0 }
        let (taken, outcome) = stream.put(contentsOf: [5, 6, 7], timeoutNanoseconds: -1, observer: &observer)
        XCTAssertEqual(taken, 3)
        XCTAssertEqual(outcome, .stored)
        XCTAssertEqual(rate.state.current.acquired, 5)  // one permit per item stored
        XCTAssertEqual(rate.state.current.successes + rate.state.current.backpressures, 0)  // not adaptive
    }

    func testAdaptiveStreamWithTheDefaultAIMDFollowsASlowConsumer() throws {
        let stream = try BoundedStream<Int>.adaptive(capacity: 200)
        XCTAssertEqual(stream.stats().rateLimit, 1000)
        XCTAssertTrue(stream.isAdaptive)
        let stop = Locked(false)
        let producer = TestThread { var i = 0; while !stop.current { try? stream.put(i, timeout: .milliseconds(100)); i += 1 } }
        // A consumer of about 500 items per second for 1.5 s: the limit backs off from 1000.
        let start = monotonicSeconds()
        var low = Double.infinity
        var notFullLate = 0  // samples of the second half with room left
        while monotonicSeconds() - start < 1.5 {
            _ = try? stream.get(maxCount: 5, timeout: .milliseconds(50))
            Thread.sleep(forTimeInterval: 0.01)
            let stats = stream.stats()
            low = Swift.min(low, stats.rateLimit ?? .infinity)
            if monotonicSeconds() - start > 0.75 && stats.depth < 200 { notFullLate += 1 }
        }
        stop.withLock { $0 = true }
        stream.close()
        XCTAssertTrue(producer.join(timeout: 10))
        XCTAssertLessThan(low, 1000)  // backed off (PAUSED, waits for room)
        XCTAssertGreaterThan(notFullLate, 0)  // not sitting at full
    }

    func testAdaptiveFeedback() throws {
        XCTAssertThrowsError(try BoundedStream<Int>(capacity: 10, adaptive: true))
        XCTAssertThrowsError(try BoundedStream<Int>(capacity: 10, policy: .reject, rate: FakeRate(), adaptive: true))
        let rate = FakeRate()
        let stream = try BoundedStream<Int>(capacity: 10, rate: rate, adaptive: true)
        rate.state.withLock { $0.hold = 1_000_000 }
        try stream.put(1)  // held by the rate, stored in NORMAL: a success
        XCTAssertEqual(rate.state.current.successes, 1)
        rate.state.withLock { $0.hold = 0 }
        fill(stream, to: 10)  // entering PAUSED: one backpressure event
        XCTAssertEqual(rate.state.current.backpressures, 1)
        let producer = TestThread { try? stream.put(2) }  // waits for room: another
        Thread.sleep(forTimeInterval: 0.1)
        _ = try stream.get()
        XCTAssertTrue(producer.join(timeout: 10))
        // The wait for room, and entering DROPPING again when the put stored.
        XCTAssertEqual(rate.state.current.backpressures, 3)
    }
}

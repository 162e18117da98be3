// The flow gate asked by a caller that waits itself (an asyncio put): what a put that may
// wait arriving now would face, at every boundary of the issue's vector, per policy, under
// hysteresis, once closed; and a give-up counted as rejected. No threads, no waiting.
import XCTest
@testable import BPStreamCore

final class FlowGateQueryTests: XCTestCase {
    func fill(_ stream: BoundedStream<Int>, to depth: Int) {
        var observer = NoWaitObserver()
        while stream.count < depth {
            XCTAssertEqual(stream.put(0, timeoutNanoseconds: 0, observer: &observer), .stored)
        }
    }

    func testAnswersAtTheIssuesBoundaries() throws {
        let flow = try FlowControl(minDelay: 0.001, maxDelay: 0.100)
        let stream = try BoundedStream<Int>(capacity: 100, flow: flow)
        let expected: [(Int, FlowState, Int64)] = [
            (0, .normal, 0), (69, .normal, 0), (70, .throttled, 1_000_000),
            (80, .throttled, 50_500_000), (90, .throttled, 100_000_000), (91, .paused, 0),
            (100, .dropping, 0),
        ]
        for (depth, state, delay) in expected {
            fill(stream, to: depth)
            let gate = stream.flowGateForCallerWaiting()
            XCTAssertEqual(gate.state, state, "depth \(depth)")
            XCTAssertEqual(Double(gate.delayNanoseconds), Double(delay), accuracy: 1, "depth \(depth)")
        }
        stream.close()
        XCTAssertEqual(stream.flowGateForCallerWaiting().state, .normal)  // the put reports it
    }

    func testWithoutFlowControlEveryPutPasses() throws {
        let stream = try BoundedStream<Int>(capacity: 100)
        fill(stream, to: 95)
        XCTAssertEqual(stream.flowState, .paused)
        XCTAssertEqual(stream.flowGateForCallerWaiting().state, .normal)
    }

    func testFullWithADroppingPolicyPassesAndThePolicyDecides() throws {
        let stream = try BoundedStream<Int>(capacity: 100, policy: .dropOldest, flow: FlowControl())
        fill(stream, to: 100)
        XCTAssertEqual(stream.flowState, .dropping)
        XCTAssertEqual(stream.flowGateForCallerWaiting().state, .normal)
        _ = try stream.get()  // 99: PAUSED, which gates every policy's puts
        XCTAssertEqual(stream.flowGateForCallerWaiting().state, .paused)
    }

    func testDroppingWithRoomUnderHysteresisWaitsAsPaused() throws {
        let stream = try BoundedStream<Int>(capacity: 100, flow: FlowControl(hysteresis: 0.05))
        fill(stream, to: 100)
        _ = try stream.get()  // 99: DROPPING is left only below 0.95
        XCTAssertEqual(stream.flowState, .dropping)
        XCTAssertEqual(stream.flowGateForCallerWaiting().state, .paused)
    }

    func testAGiveUpCountsAsRejected() throws {
        let stream = try BoundedStream<Int>(capacity: 10, flow: FlowControl())
        stream.countPutGaveUpAtGate()
        XCTAssertEqual(stream.stats().rejected, 1)
    }
}

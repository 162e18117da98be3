// The flow state machine (Flow.swift) without threads or clocks: every boundary of the
// issue's vectors, hysteresis on leaving every state, exact event counts, time paused with
// explicit times, capacity changes and unbounded streams.
import XCTest
@testable import BPStreamCore

final class FlowMonitorTests: XCTestCase {
    let delays = try! FlowControl(minDelay: 0.001, maxDelay: 0.100)

    /// A monitor at `depth` of 100, reached by rising from empty.
    func monitor(at depth: Int, _ control: FlowControl? = nil) -> FlowMonitor {
        var m = FlowMonitor(control: control ?? delays, capacity: 100)
        _ = m.observe(depth: depth, now: 0)
        return m
    }

    func testBoundariesOfTheIssue() {
        XCTAssertEqual(monitor(at: 0).state, .normal)
        XCTAssertEqual(monitor(at: 69).state, .normal)
        XCTAssertEqual(monitor(at: 69).throttleDelay(depth: 69), 0)
        XCTAssertEqual(monitor(at: 70).state, .throttled)
        XCTAssertEqual(monitor(at: 70).throttleDelay(depth: 70), 0.001, accuracy: 1e-12)
        XCTAssertEqual(monitor(at: 80).state, .throttled)
        XCTAssertEqual(monitor(at: 80).throttleDelay(depth: 80), 0.0505, accuracy: 1e-12)
        XCTAssertEqual(monitor(at: 80).throttleDelayNanoseconds(depth: 80), 50_500_000)
        XCTAssertEqual(monitor(at: 90).state, .throttled)
        XCTAssertEqual(monitor(at: 90).throttleDelay(depth: 90), 0.100, accuracy: 1e-12)
        XCTAssertEqual(monitor(at: 91).state, .paused)
        XCTAssertEqual(monitor(at: 91).throttleDelay(depth: 91), 0)
        XCTAssertEqual(monitor(at: 99).state, .paused)
        XCTAssertEqual(monitor(at: 100).state, .dropping)
        XCTAssertEqual(monitor(at: 100).throttleDelay(depth: 100), 0)
    }

    func testStepByStepRiseAndFallWithoutHysteresis() {
        var m = FlowMonitor(control: delays, capacity: 100)
        var seen: [FlowTransition] = []
        for d in 0...100 { if let t = m.observe(depth: d, now: Int64(d)) { seen.append(t) } }
        XCTAssertEqual(seen.map(\.new), [.throttled, .paused, .dropping])
        XCTAssertEqual(seen.map(\.fill), [0.70, 0.91, 1.0])
        for d in stride(from: 99, through: 0, by: -1) {
            if let t = m.observe(depth: d, now: Int64(200 - d)) { seen.append(t) }
        }
        XCTAssertEqual(seen.map(\.new), [.throttled, .paused, .dropping, .paused, .throttled, .normal])
        // Without hysteresis: DROPPING left at 99, PAUSED at 90 (<= pause_at), THROTTLED at 69.
        XCTAssertEqual(seen.suffix(3).map(\.fill), [0.99, 0.90, 0.69])
        XCTAssertEqual(m.throttleEvents, 1)
        XCTAssertEqual(m.pauseEvents, 1)
    }

    func testHysteresisVectorOfTheIssue() throws {
        let h = try FlowControl(hysteresis: 0.05)
        var m = monitor(at: 95, h)
        XCTAssertEqual(m.state, .paused)
        XCTAssertNil(m.observe(depth: 88, now: 1))
        XCTAssertEqual(m.state, .paused)
        XCTAssertNil(m.observe(depth: 85, now: 1))  // 0.85 is not below 0.90 - 0.05
        XCTAssertEqual(m.observe(depth: 84, now: 1), FlowTransition(old: .paused, new: .throttled, fill: 0.84))
        // THROTTLED is left only below 0.70 - 0.05.
        XCTAssertNil(m.observe(depth: 66, now: 2))
        XCTAssertNil(m.observe(depth: 65, now: 2))
        XCTAssertEqual(m.observe(depth: 64, now: 2)?.new, .normal)
        // DROPPING is left only below 1.0 - 0.05; then straight to the state of the fill.
        _ = m.observe(depth: 100, now: 3)
        XCTAssertEqual(m.state, .dropping)
        XCTAssertNil(m.observe(depth: 96, now: 4))
        XCTAssertNil(m.observe(depth: 95, now: 4))
        XCTAssertEqual(m.observe(depth: 94, now: 4)?.new, .paused)
        _ = m.observe(depth: 100, now: 5)
        XCTAssertEqual(m.observe(depth: 10, now: 6), FlowTransition(old: .dropping, new: .normal, fill: 0.10))
        // Entries are not delayed by hysteresis.
        XCTAssertEqual(m.observe(depth: 70, now: 7)?.new, .throttled)
        XCTAssertEqual(m.observe(depth: 91, now: 7)?.new, .paused)
    }

    func testEventCountsAndJumps() {
        var m = FlowMonitor(control: delays, capacity: 100)
        _ = m.observe(depth: 75, now: 0)   // NORMAL -> THROTTLED: a throttle event
        _ = m.observe(depth: 95, now: 0)   // THROTTLED -> PAUSED: a pause event
        _ = m.observe(depth: 80, now: 0)   // PAUSED -> THROTTLED: none
        _ = m.observe(depth: 100, now: 0)  // THROTTLED -> DROPPING: a pause event
        _ = m.observe(depth: 0, now: 0)    // -> NORMAL
        _ = m.observe(depth: 92, now: 0)   // NORMAL -> PAUSED (a batch): a pause event only
        _ = m.observe(depth: 50, now: 0)
        _ = m.observe(depth: 100, now: 0)  // NORMAL -> DROPPING: a pause event only
        XCTAssertEqual(m.throttleEvents, 1)
        XCTAssertEqual(m.pauseEvents, 4)
        // Moving within a state reports nothing and counts nothing.
        var n = FlowMonitor(control: delays, capacity: 100)
        _ = n.observe(depth: 70, now: 0)
        for d in [71, 85, 90, 72, 70, 89] { XCTAssertNil(n.observe(depth: d, now: 0)) }
        XCTAssertEqual(n.throttleEvents, 1)
        XCTAssertEqual(n.pauseEvents, 0)
    }

    func testTimePausedCountsPausedAndDroppingWithTheOpenSpell() {
        var m = FlowMonitor(control: delays, capacity: 100, now: 0)
        _ = m.observe(depth: 95, now: 1_000)      // paused from 1000
        XCTAssertEqual(m.timePausedNanoseconds(now: 1_500), 500)  // open spell
        _ = m.observe(depth: 100, now: 2_000)     // dropping: still paused time
        _ = m.observe(depth: 80, now: 3_000)      // throttled: spell 1000..3000 closed
        XCTAssertEqual(m.timePausedNanoseconds(now: 9_000), 2_000)
        _ = m.observe(depth: 0, now: 4_000)
        _ = m.observe(depth: 99, now: 10_000)     // paused again
        XCTAssertEqual(m.timePausedNanoseconds(now: 10_250), 2_250)
    }

    func testMayChangeNeverSkipsAChange() throws {
        for control in [delays, try FlowControl(hysteresis: 0.05), try FlowControl(throttleAt: 0.5, pauseAt: 0.5)] {
            for capacity in [1, 2, 3, 7, 10, 100] {
                var m = FlowMonitor(control: control, capacity: capacity)
                var depth = 0
                for step in 0..<500 {
                    depth = (depth * 7 + step * 3 + 1) % (capacity + 1)
                    var copy = m
                    let changed = copy.observe(depth: depth, now: 0) != nil
                    if !m.mayChange(depth: depth) { XCTAssertFalse(changed, "skipped a change") }
                    _ = m.observe(depth: depth, now: 0)
                    // The state always agrees with the fill's plain classification at the
                    // marks' edges (no hysteresis: exactly).
                    if control.hysteresis == 0 {
                        let fill = Double(depth) / Double(capacity)
                        let plain: FlowState = depth >= capacity ? .dropping
                            : fill > control.pauseAt ? .paused
                            : fill >= control.throttleAt ? .throttled : .normal
                        XCTAssertEqual(m.state, plain, "capacity \(capacity) depth \(depth)")
                    }
                }
            }
        }
    }

    func testCapacityChangesReclassify() {
        var m = monitor(at: 60)
        XCTAssertEqual(m.setCapacity(80, depth: 60, now: 0)?.new, .throttled)  // 0.75
        XCTAssertEqual(m.setCapacity(60, depth: 60, now: 0)?.new, .dropping)
        XCTAssertEqual(m.setCapacity(65, depth: 60, now: 0)?.new, .paused)     // 0.923
        XCTAssertEqual(m.setCapacity(1000, depth: 60, now: 0)?.new, .normal)
        _ = m.setCapacity(60, depth: 60, now: 0)
        XCTAssertEqual(m.setCapacity(nil, depth: 60, now: 0), FlowTransition(old: .dropping, new: .normal, fill: 0))
        XCTAssertNil(m.observe(depth: 1 << 29, now: 0))
        XCTAssertEqual(m.state, .normal)
    }

    func testUnboundedIsAlwaysNormal() {
        var m = FlowMonitor(capacity: nil)
        for d in [0, 1, 1000, Int.max - 1] { XCTAssertNil(m.observe(depth: d, now: 0)) }
        XCTAssertEqual(m.state, .normal)
        XCTAssertFalse(m.mayChange(depth: Int.max - 1))
    }

    func testSmallCapacities() {
        var one = FlowMonitor(capacity: 1)
        XCTAssertEqual(one.observe(depth: 1, now: 0)?.new, .dropping)
        XCTAssertEqual(one.observe(depth: 0, now: 0)?.new, .normal)
        var ten = FlowMonitor(capacity: 10)
        XCTAssertEqual(ten.observe(depth: 7, now: 0)?.new, .throttled)
        XCTAssertEqual(ten.observe(depth: 9, now: 0), nil)  // 0.9 is not above 0.9
        XCTAssertEqual(ten.observe(depth: 10, now: 0)?.new, .dropping)
        XCTAssertEqual(ten.observe(depth: 9, now: 0)?.new, .throttled)
    }

    func testBadControlsAreRefused() {
        XCTAssertThrowsError(try FlowControl(throttleAt: 0))
        XCTAssertThrowsError(try FlowControl(throttleAt: 0.8, pauseAt: 0.7))
        XCTAssertThrowsError(try FlowControl(pauseAt: 1.5))
        XCTAssertThrowsError(try FlowControl(minDelay: -1))
        XCTAssertThrowsError(try FlowControl(minDelay: 0.2, maxDelay: 0.1))
        XCTAssertThrowsError(try FlowControl(maxDelay: .infinity))
        XCTAssertThrowsError(try FlowControl(maxDelay: .nan))
        XCTAssertThrowsError(try FlowControl(hysteresis: 1))
        XCTAssertThrowsError(try FlowControl(hysteresis: -0.1))
    }
}

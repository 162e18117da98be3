// The flow-control ABI (FlowABI.swift, bpstream.h "Flow control") called as C would: a
// config with flow marks gates puts; stats carry the flow fields (and an older, shorter
// bps_stats gets only what it has room for); listeners run per transition, in order, and
// their context is released once; the adaptive policy; a config of the older size.
import CBPStream
import Foundation
import XCTest

extension bps_config {
    /// The fields before flow control; the rest zero (flow off, no rate, no clock), as a C
    /// caller's designated initializer leaves them.
    init(size: Int, capacity: Int64, policy: bps_policy, release: bps_release_fn?,
         release_context: UnsafeMutableRawPointer?) {
        self.init()
        self.size = size
        self.capacity = capacity
        self.policy = policy
        self.release = release
        self.release_context = release_context
    }
}

private final class FlowLog: @unchecked Sendable {
    let lock = NSLock()
    var transitions: [(UInt32, UInt32, Double)] = []
    var released = 0
    var stream: OpaquePointer? = nil
    var depthsSeen: [UInt64] = []
    func record(_ body: () -> Void) { lock.lock(); body(); lock.unlock() }
}

private let logFlow: bps_flow_fn = { context, old, new, fill in
    let log = Unmanaged<FlowLog>.fromOpaque(context!).takeUnretainedValue()
    var depth: UInt64 = 0
    if let stream = log.stream { _ = bps_stream_depth(stream, &depth) }  // back into the stream
    log.record {
        log.transitions.append((old.rawValue, new.rawValue, fill))
        log.depthsSeen.append(depth)
    }
}

private let logFlowRelease: bps_context_release_fn = { context in
    let log = Unmanaged<FlowLog>.fromOpaque(context!).takeUnretainedValue()
    log.record { log.released += 1 }
}

/// A non-NULL, 2-aligned item the stream never looks into.
private func item() -> UnsafeMutableRawPointer { UnsafeMutableRawPointer(bitPattern: 0x1000)! }

final class FlowABITests: XCTestCase {
    func testFlowConfigStatsAndListener() {
        var config = bps_config(size: MemoryLayout<bps_config>.size, capacity: 10, policy: BPS_POLICY_BLOCK,
                                release: nil, release_context: nil)
        config.flow = 1
        config.throttle_at = 0.5
        config.pause_at = 0.8
        config.min_delay = 0.001
        config.max_delay = 0.101
        var stream: OpaquePointer?
        XCTAssertEqual(bps_stream_create(&config, &stream), BPS_OK)
        defer { bps_stream_release(stream) }
        let log = FlowLog()
        log.stream = stream
        var listener: OpaquePointer?
        XCTAssertEqual(bps_stream_on_flow_change(stream, logFlow, logFlowRelease,
                                                 Unmanaged.passUnretained(log).toOpaque(), &listener), BPS_OK)
        for _ in 0..<6 { XCTAssertEqual(bps_stream_put(stream, item(), 0, nil), BPS_OK) }
        var state = BPS_FLOW_NORMAL
        XCTAssertEqual(bps_stream_flow_state(stream, &state), BPS_OK)
        XCTAssertEqual(state, BPS_FLOW_THROTTLED)
        var stats = bps_stats()
        stats.size = MemoryLayout<bps_stats>.size
        XCTAssertEqual(bps_stream_stats(stream, &stats), BPS_OK)
        XCTAssertEqual(stats.flow_state, BPS_FLOW_THROTTLED.rawValue)
        XCTAssertEqual(stats.throttle_events, 1)
        XCTAssertEqual(stats.throttle_delay, 0.001 + 0.1 * (0.6 - 0.5) / 0.3, accuracy: 1e-9)
        XCTAssertEqual(stats.rate_limit, -1)
        // A put that may wait is delayed; one that may not is not.
        let start = Date()
        XCTAssertEqual(bps_stream_put(stream, item(), 5_000_000_000, nil), BPS_OK)  // 0.7 -> delay at 6
        XCTAssertGreaterThanOrEqual(Date().timeIntervalSince(start), 0.03)
        for _ in 0..<3 { XCTAssertEqual(bps_stream_put(stream, item(), 0, nil), BPS_OK) }  // 10: DROPPING
        var out: UnsafeMutableRawPointer?
        for _ in 0..<10 { XCTAssertEqual(bps_stream_get(stream, 0, nil, &out), BPS_OK) }
        XCTAssertEqual(log.transitions.map(\.1), [1, 2, 3, 2, 1, 0])
        XCTAssertEqual(log.transitions.map(\.2), [0.5, 0.9, 1.0, 0.9, 0.8, 0.4])
        XCTAssertEqual(log.depthsSeen, [5, 9, 10, 9, 8, 4])  // called after the lock, per transition
        XCTAssertEqual(log.released, 0)
        XCTAssertEqual(bps_flow_listener_remove(listener), BPS_OK)
        XCTAssertEqual(log.released, 1)
        XCTAssertEqual(bps_stream_put(stream, item(), 0, nil), BPS_OK)
        XCTAssertEqual(log.transitions.count, 6)
        XCTAssertEqual(bps_flow_listener_remove(nil), BPS_INVALID_ARGUMENT)
        XCTAssertEqual(bps_stream_on_flow_change(stream, nil, nil, nil, &listener), BPS_INVALID_ARGUMENT)
    }

    func testBadFlowConfigAndOlderSizes() {
        var config = bps_config(size: MemoryLayout<bps_config>.size, capacity: 10, policy: BPS_POLICY_BLOCK,
                                release: nil, release_context: nil)
        config.flow = 1
        config.throttle_at = 0.9
        config.pause_at = 0.5
        var stream: OpaquePointer?
        XCTAssertEqual(bps_stream_create(&config, &stream), BPS_INVALID_ARGUMENT)
        config.flow = 2
        XCTAssertEqual(bps_stream_create(&config, &stream), BPS_INVALID_ARGUMENT)
        // An older caller's struct ends before the flow fields: accepted, flow off.
        config.size = MemoryLayout<bps_config>.offset(of: \bps_config.flow)!
        XCTAssertEqual(bps_stream_create(&config, &stream), BPS_OK)
        defer { bps_stream_release(stream) }
        for _ in 0..<10 { XCTAssertEqual(bps_stream_put(stream, item(), 0, nil), BPS_OK) }
        // An older bps_stats gets only what it has room for: the flow fields stay untouched.
        var stats = bps_stats()
        stats.size = MemoryLayout<bps_stats>.offset(of: \bps_stats.flow_state)!
        stats.throttle_events = 77
        XCTAssertEqual(bps_stream_stats(stream, &stats), BPS_OK)
        XCTAssertEqual(stats.depth, 10)
        XCTAssertEqual(stats.throttle_events, 77)
        stats.size = 8
        XCTAssertEqual(bps_stream_stats(stream, &stats), BPS_INVALID_ARGUMENT)
        var state = BPS_FLOW_NORMAL
        XCTAssertEqual(bps_stream_flow_state(stream, &state), BPS_OK)
        XCTAssertEqual(state, BPS_FLOW_DROPPING)  // reported without flow control
        XCTAssertEqual(bps_stream_flow_state(stream, nil), BPS_INVALID_ARGUMENT)
    }

    func testAdaptivePolicy() {
        var config = bps_config(size: MemoryLayout<bps_config>.size, capacity: 10, policy: BPS_POLICY_ADAPTIVE,
                                release: nil, release_context: nil)
        var stream: OpaquePointer?
        XCTAssertEqual(bps_stream_create(&config, &stream), BPS_OK)
        defer { bps_stream_release(stream) }
        var policy = BPS_POLICY_BLOCK
        XCTAssertEqual(bps_stream_policy(stream, &policy), BPS_OK)
        XCTAssertEqual(policy, BPS_POLICY_ADAPTIVE)
        var stats = bps_stats()
        stats.size = MemoryLayout<bps_stats>.size
        XCTAssertEqual(bps_stream_stats(stream, &stats), BPS_OK)
        XCTAssertEqual(stats.rate_limit, 1000)
        config.policy = bps_policy(rawValue: 6)
        var bad: OpaquePointer?
        XCTAssertEqual(bps_stream_create(&config, &bad), BPS_INVALID_ARGUMENT)
    }
}

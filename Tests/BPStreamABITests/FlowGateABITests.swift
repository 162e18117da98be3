// bps_stream_flow_gate and bps_stream_flow_gave_up called as C would (an asyncio binding
// passing the gate itself): the answers per state, bad arguments, and the rejected count.
import CBPStream
import XCTest

final class FlowGateABITests: XCTestCase {
    func testGateAnswersAndGiveUp() {
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
        var state = BPS_FLOW_DROPPING
        var delay: Int64 = -1
        XCTAssertEqual(bps_stream_flow_gate(stream, &state, &delay), BPS_OK)
        XCTAssertEqual(state, BPS_FLOW_NORMAL)
        XCTAssertEqual(delay, 0)
        let token = UnsafeMutableRawPointer(bitPattern: 0x10)!
        for _ in 0..<6 { XCTAssertEqual(bps_stream_put(stream, token, 0, nil), BPS_OK) }  // 0.6
        XCTAssertEqual(bps_stream_flow_gate(stream, &state, &delay), BPS_OK)
        XCTAssertEqual(state, BPS_FLOW_THROTTLED)
        XCTAssertEqual(Double(delay), 1e9 * (0.001 + 0.1 * (0.6 - 0.5) / 0.3), accuracy: 1)
        for _ in 0..<3 { XCTAssertEqual(bps_stream_put(stream, token, 0, nil), BPS_OK) }  // 0.9
        XCTAssertEqual(bps_stream_flow_gate(stream, &state, &delay), BPS_OK)
        XCTAssertEqual(state, BPS_FLOW_PAUSED)
        XCTAssertEqual(delay, 0)
        XCTAssertEqual(bps_stream_put(stream, token, 0, nil), BPS_OK)  // full
        XCTAssertEqual(bps_stream_flow_gate(stream, &state, &delay), BPS_OK)
        XCTAssertEqual(state, BPS_FLOW_DROPPING)
        XCTAssertEqual(bps_stream_flow_gate(stream, nil, &delay), BPS_INVALID_ARGUMENT)
        XCTAssertEqual(bps_stream_flow_gate(stream, &state, nil), BPS_INVALID_ARGUMENT)
        XCTAssertEqual(bps_stream_flow_gate(nil, &state, &delay), BPS_INVALID_ARGUMENT)
        XCTAssertEqual(bps_stream_flow_gave_up(stream), BPS_OK)
        var stats = bps_stats()
        stats.size = MemoryLayout<bps_stats>.size
        XCTAssertEqual(bps_stream_stats(stream, &stats), BPS_OK)
        XCTAssertEqual(stats.rejected, 1)
        XCTAssertEqual(bps_stream_flow_gave_up(nil), BPS_INVALID_ARGUMENT)
    }
}

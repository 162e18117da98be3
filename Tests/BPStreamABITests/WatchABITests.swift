// Readiness watches through the C ABI: notify and release_context are C-convention
// functions reaching their state through the context pointer, as a C caller's would.
import CBPStream
import Foundation
import XCTest

/// What the C callbacks record; passed as the context pointer (retained by the test).
private final class WatchLog: @unchecked Sendable {
    let lock = NSLock()
    var events: [UInt32] = []
    var released = 0
    func record(_ body: () -> Void) { lock.lock(); body(); lock.unlock() }
}

private let logNotify: bps_notify_fn = { context, events in
    let log = Unmanaged<WatchLog>.fromOpaque(context!).takeUnretainedValue()
    log.record { log.events.append(events) }
}

private let logRelease: bps_context_release_fn = { context in
    let log = Unmanaged<WatchLog>.fromOpaque(context!).takeUnretainedValue()
    log.record { log.released += 1 }
}

final class WatchABITests: XCTestCase {
    private func makeStream(capacity: Int64) -> OpaquePointer {
        var config = bps_config(size: MemoryLayout<bps_config>.size, capacity: capacity,
                                policy: BPS_POLICY_BLOCK, release: nil, release_context: nil)
        var stream: OpaquePointer?
        XCTAssertEqual(bps_stream_create(&config, &stream), BPS_OK)
        return stream!
    }

    func testArmNotifyRearmAndRelease() {
        let stream = makeStream(capacity: 1)
        let log = WatchLog()
        let context = Unmanaged.passUnretained(log).toOpaque()
        var watch: OpaquePointer?
        XCTAssertEqual(bps_stream_watch(stream, logNotify, logRelease, context, &watch), BPS_OK)
        var ready: UInt32 = 99
        XCTAssertEqual(bps_watch_arm(watch, BPS_READABLE, &ready), BPS_OK)
        XCTAssertEqual(ready, 0)
        let item = UnsafeMutableRawPointer(bitPattern: 0x10)!
        XCTAssertEqual(bps_stream_put(stream, item, 0, nil), BPS_OK)
        XCTAssertEqual(log.events, [BPS_READABLE])
        // Full now: writable is armed; readable is ready (returned, nothing armed).
        XCTAssertEqual(bps_watch_arm(watch, BPS_READABLE | BPS_WRITABLE, &ready), BPS_OK)
        XCTAssertEqual(ready, BPS_READABLE)
        XCTAssertEqual(bps_watch_arm(watch, BPS_WRITABLE, &ready), BPS_OK)
        XCTAssertEqual(ready, 0)
        var out: UnsafeMutableRawPointer?
        XCTAssertEqual(bps_stream_get(stream, 0, nil, &out), BPS_OK)
        XCTAssertEqual(log.events, [BPS_READABLE, BPS_WRITABLE])
        XCTAssertEqual(bps_watch_arm(watch, BPS_READABLE, &ready), BPS_OK)
        XCTAssertEqual(bps_stream_close(stream, 0), BPS_OK)
        XCTAssertEqual(log.events, [BPS_READABLE, BPS_WRITABLE, BPS_READABLE | BPS_WATCH_CLOSED])
        XCTAssertEqual(log.released, 0)
        XCTAssertEqual(bps_watch_release(watch), BPS_OK)
        XCTAssertEqual(log.released, 1)
        XCTAssertEqual(bps_stream_release(stream), BPS_OK)
    }

    /// BPS_TASKS_DONE: an async join. It holds with no unfinished tasks; once armed, the
    /// task_done that reaches zero notifies it.
    func testTasksDoneFiresWhenTheLastTaskIsDone() {
        let stream = makeStream(capacity: 4)
        let log = WatchLog()
        var watch: OpaquePointer?
        var ready: UInt32 = 0
        XCTAssertEqual(bps_stream_watch(stream, logNotify, nil, Unmanaged.passUnretained(log).toOpaque(),
                                        &watch), BPS_OK)
        XCTAssertEqual(bps_watch_arm(watch, BPS_TASKS_DONE, &ready), BPS_OK)
        XCTAssertEqual(ready, BPS_TASKS_DONE)
        let item = UnsafeMutableRawPointer(bitPattern: 0x10)!
        XCTAssertEqual(bps_stream_put(stream, item, 0, nil), BPS_OK)
        XCTAssertEqual(bps_watch_arm(watch, BPS_TASKS_DONE, &ready), BPS_OK)
        XCTAssertEqual(ready, 0)
        var out: UnsafeMutableRawPointer?
        XCTAssertEqual(bps_stream_get(stream, 0, nil, &out), BPS_OK)
        XCTAssertEqual(log.events, [])
        XCTAssertEqual(bps_stream_task_done(stream, 1), BPS_OK)
        XCTAssertEqual(log.events, [BPS_TASKS_DONE])
        XCTAssertEqual(bps_watch_release(watch), BPS_OK)
        XCTAssertEqual(bps_stream_release(stream), BPS_OK)
    }

    func testBadArgumentsAreStatuses() {
        let stream = makeStream(capacity: 1)
        var watch: OpaquePointer?
        var ready: UInt32 = 0
        XCTAssertEqual(bps_stream_watch(nil, logNotify, nil, nil, &watch), BPS_INVALID_ARGUMENT)
        XCTAssertEqual(bps_stream_watch(stream, nil, nil, nil, &watch), BPS_INVALID_ARGUMENT)
        XCTAssertEqual(bps_stream_watch(stream, logNotify, nil, nil, nil), BPS_INVALID_ARGUMENT)
        let log = WatchLog()
        XCTAssertEqual(bps_stream_watch(stream, logNotify, nil, Unmanaged.passUnretained(log).toOpaque(),
                                        &watch), BPS_OK)
        XCTAssertEqual(bps_watch_arm(watch, 0, &ready), BPS_INVALID_ARGUMENT)
        XCTAssertEqual(bps_watch_arm(watch, 16, &ready), BPS_INVALID_ARGUMENT)
        XCTAssertEqual(bps_watch_arm(watch, BPS_WATCH_CLOSED, &ready), BPS_INVALID_ARGUMENT)
        XCTAssertEqual(bps_watch_arm(watch, BPS_READABLE, nil), BPS_INVALID_ARGUMENT)
        XCTAssertEqual(bps_watch_arm(nil, BPS_READABLE, &ready), BPS_INVALID_ARGUMENT)
        XCTAssertEqual(bps_watch_release(nil), BPS_INVALID_ARGUMENT)
        XCTAssertEqual(bps_watch_release(watch), BPS_OK)
        XCTAssertEqual(bps_stream_release(stream), BPS_OK)
    }

    /// The watch keeps the stream alive: releasing the caller's stream first is fine.
    func testAWatchOutlivesTheCallersStreamReference() {
        let stream = makeStream(capacity: 1)
        let log = WatchLog()
        var watch: OpaquePointer?
        XCTAssertEqual(bps_stream_watch(stream, logNotify, logRelease,
                                        Unmanaged.passUnretained(log).toOpaque(), &watch), BPS_OK)
        XCTAssertEqual(bps_stream_release(stream), BPS_OK)
        var ready: UInt32 = 0
        XCTAssertEqual(bps_watch_arm(watch, BPS_READABLE, &ready), BPS_OK)
        XCTAssertEqual(bps_watch_release(watch), BPS_OK)
        XCTAssertEqual(log.released, 1)
    }
}

// The C ABI, called the way C calls it: through bpstream.h only (`import CBPStream`; the
// Swift module behind it is linked, never imported). Items are opaque pointers the stream
// never dereferences, so most tests use small fake addresses; the release callback, the wait
// hook and the visitor are C-convention closures that reach their state through the
// context pointer, exactly as a C caller's would.
//
// Glibc (pipes, fork) and Foundation (threads) are used by the tests themselves only.
import CBPStream
import Foundation
import Synchronization
import XCTest
#if canImport(Glibc)
import Glibc
#endif

// MARK: - Helpers

/// A fake item: a distinct, even, non-NULL address the stream treats as opaque.
private func item(_ n: Int) -> UnsafeMutableRawPointer {
    UnsafeMutableRawPointer(bitPattern: UInt(n) << 4)!
}

private func number(_ item: UnsafeMutableRawPointer?) -> Int {
    Int(UInt(bitPattern: item) >> 4)
}

private func statusName(_ status: bps_status) -> String {
    String(cString: bps_status_string(status))
}

private func assertStatus(
    _ actual: bps_status, _ expected: bps_status, _ message: @autoclosure () -> String = "",
    file: StaticString = #filePath, line: UInt = #line
) {
    XCTAssertEqual(actual.rawValue, expected.rawValue,
                   "got \(actual.rawValue) (\(statusName(actual))), expected \(expected.rawValue) (\(statusName(expected))) \(message())",
                   file: file, line: line)
}

/// The NUL-terminated text at the start of `buffer`.
private func cString(_ buffer: [CChar]) -> String {
    let bytes = buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
    return String(decoding: bytes, as: UTF8.self)
}

private func config(
    capacity: Int64, policy: bps_policy = BPS_POLICY_BLOCK,
    release: bps_release_fn? = nil, context: UnsafeMutableRawPointer? = nil
) -> bps_config {
    bps_config(size: MemoryLayout<bps_config>.size, capacity: capacity, policy: policy,
               release: release, release_context: context)
}

/// A stream handle that may cross to a test thread (the ABI is thread-safe).
private struct Handle: @unchecked Sendable {
    let raw: OpaquePointer
}

/// Records every release callback call; reached through the context pointer.
private final class ReleaseLog: @unchecked Sendable {
    private let lock = NSLock()
    private var _items: [Int] = []
    var items: [Int] { lock.lock(); defer { lock.unlock() }; return _items }
    func record(_ n: Int) { lock.lock(); _items.append(n); lock.unlock() }

    var context: UnsafeMutableRawPointer { Unmanaged.passUnretained(self).toOpaque() }

    static let callback: bps_release_fn = { item, context in
        Unmanaged<ReleaseLog>.fromOpaque(context!).takeUnretainedValue().record(number(item))
    }
}

/// Records wait-hook events and cancels on the Nth POLL (0: never).
private final class HookRecorder: @unchecked Sendable {
    private let lock = NSLock()
    private var _events: [UInt32] = []
    let cancelOnPoll: Int
    private var polls = 0

    init(cancelOnPoll: Int = 0) { self.cancelOnPoll = cancelOnPoll }

    var events: [UInt32] { lock.lock(); defer { lock.unlock() }; return _events }

    func handle(_ event: bps_wait_event) -> Int32 {
        lock.lock()
        defer { lock.unlock() }
        _events.append(event.rawValue)
        guard event == BPS_WAIT_POLL else { return 0 }
        polls += 1
        return cancelOnPoll > 0 && polls >= cancelOnPoll ? 1 : 0
    }

    static let hook: bps_wait_hook = { context, event in
        Unmanaged<HookRecorder>.fromOpaque(context!).takeUnretainedValue().handle(event)
    }

    func waiter(pollIntervalNanoseconds: Int64 = 1_000_000) -> bps_waiter {
        bps_waiter(size: MemoryLayout<bps_waiter>.size, poll_interval_ns: pollIntervalNanoseconds,
                   hook: Self.hook, context: Unmanaged.passUnretained(self).toOpaque())
    }
}

private let BEGIN = BPS_WAIT_BEGIN.rawValue
private let POLL = BPS_WAIT_POLL.rawValue
private let END = BPS_WAIT_END.rawValue

/// Seconds on the monotonic clock.
private func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// Runs `body` on a new thread and waits for it; returns whether it finished within
/// `seconds` (a hang guard: a call that never returns fails the test instead of hanging it).
private func onThread(timeout seconds: Double = 20, _ body: @escaping @Sendable () -> Void) -> Bool {
    spawn(body)(seconds)
}

/// Starts `body` on a new thread; the returned function joins it with a deadline.
private func spawn(_ body: @escaping @Sendable () -> Void) -> (_ timeout: Double) -> Bool {
    let done = DispatchSemaphore(value: 0)
    Thread { body(); done.signal() }.start()
    return { seconds in done.wait(timeout: .now() + seconds) == .success }
}

final class ABITests: XCTestCase {
    private var streams: [OpaquePointer] = []
    /// Contexts handed to C callbacks: alive until the streams that call them are released.
    private var contexts: [AnyObject] = []

    private func makeLog() -> ReleaseLog {
        let log = ReleaseLog()
        contexts.append(log)
        return log
    }

    /// Creates a stream released at the end of the test.
    private func makeStream(_ config: bps_config, file: StaticString = #filePath, line: UInt = #line)
        -> OpaquePointer
    {
        var cfg = config
        var stream: OpaquePointer?
        assertStatus(bps_stream_create(&cfg, &stream), BPS_OK, file: file, line: line)
        streams.append(stream!)
        return stream!
    }

    override func tearDown() {
        for stream in streams { _ = bps_stream_release(stream) }
        streams = []
        contexts = []
        super.tearDown()
    }

    private func stats(_ stream: OpaquePointer, file: StaticString = #filePath, line: UInt = #line) -> bps_stats {
        var s = bps_stats()
        s.size = MemoryLayout<bps_stats>.size
        assertStatus(bps_stream_stats(stream, &s), BPS_OK, file: file, line: line)
        return s
    }

    private func depth(_ stream: OpaquePointer) -> UInt64 {
        var d: UInt64 = 0
        assertStatus(bps_stream_depth(stream, &d), BPS_OK)
        return d
    }

    /// Drains what is buffered without waiting.
    private func drain(_ stream: OpaquePointer) -> [Int] {
        var out: [Int] = []
        var got: UnsafeMutableRawPointer?
        while bps_stream_get(stream, 0, nil, &got) == BPS_OK { out.append(number(got)) }
        return out
    }

    // MARK: version and status strings

    func testABIVersionMatchesTheHeader() {
        XCTAssertEqual(bps_abi_version(), UInt32(BPS_ABI_VERSION))
    }

    func testStatusStringsAreNeverNullAndNameEveryKnownStatus() {
        let unknown = statusName(bps_status(rawValue: 1234))
        XCTAssertFalse(unknown.isEmpty)
        var seen = Set<String>()
        for raw in UInt32(0)...11 {
            let text: UnsafePointer<CChar>? = bps_status_string(bps_status(rawValue: raw))
            XCTAssertNotNil(text, "status \(raw)")
            let string = statusName(bps_status(rawValue: raw))
            XCTAssertFalse(string.isEmpty, "status \(raw)")
            XCTAssertNotEqual(string, unknown, "status \(raw) is known")
            seen.insert(string)
        }
        XCTAssertEqual(seen.count, 12, "every status has its own text")
        for raw: UInt32 in [12, 99, 1234, UInt32(Int32.max), UInt32.max] {
            let text: UnsafePointer<CChar>? = bps_status_string(bps_status(rawValue: raw))
            XCTAssertNotNil(text)
            XCTAssertEqual(statusName(bps_status(rawValue: raw)), unknown)
        }
    }

    // MARK: create

    func testCreateRejectsBadConfigsAndLeavesTheOutParameterAlone() {
        let sentinel = OpaquePointer(bitPattern: 0xBAD0)
        var out: OpaquePointer? = sentinel
        assertStatus(bps_stream_create(nil, &out), BPS_INVALID_ARGUMENT, "NULL config")
        XCTAssertEqual(out, sentinel)
        var good = config(capacity: 4)
        assertStatus(bps_stream_create(&good, nil), BPS_INVALID_ARGUMENT, "NULL out")

        var bad: [(String, bps_config)] = []
        for size in [0, 1, MemoryLayout<bps_config>.size - 1] {
            var c = config(capacity: 4)
            c.size = size
            bad.append(("size \(size)", c))
        }
        for capacity: Int64 in [0, -2, Int64(BPS_CAPACITY_MAX) + 1, Int64.min, Int64.max] {
            bad.append(("capacity \(capacity)", config(capacity: capacity)))
        }
        for policy: UInt32 in [6, 99, 256, 260, UInt32.max] {  // 5: BPS_POLICY_ADAPTIVE
            bad.append(("policy \(policy)", config(capacity: 4, policy: bps_policy(rawValue: policy))))
        }
        for (what, c) in bad {
            var cfg = c
            out = sentinel
            assertStatus(bps_stream_create(&cfg, &out), BPS_INVALID_ARGUMENT, what)
            XCTAssertEqual(out, sentinel, "\(what): out-parameter written on failure")
        }

        // The edges that are valid.
        var policyOut = BPS_POLICY_BLOCK
        for (capacity, policy) in [(Int64(1), BPS_POLICY_DROP_ALL), (Int64(BPS_CAPACITY_MAX), BPS_POLICY_REJECT),
                                   (BPS_CAPACITY_UNBOUNDED, BPS_POLICY_DROP_OLDEST)] {
            let stream = makeStream(config(capacity: capacity, policy: policy))
            var reported: Int64 = 0
            assertStatus(bps_stream_capacity(stream, &reported), BPS_OK)
            XCTAssertEqual(reported, capacity)
            assertStatus(bps_stream_policy(stream, &policyOut), BPS_OK)
            XCTAssertEqual(policyOut, policy)
        }
        var larger = config(capacity: 4)
        larger.size += 64  // a newer caller's bigger struct is fine
        withUnsafeTemporaryAllocation(byteCount: larger.size, alignment: 16) { raw in
            raw.initializeMemory(as: UInt8.self, repeating: 0)
            raw.baseAddress!.storeBytes(of: larger, as: bps_config.self)
            var stream: OpaquePointer?
            assertStatus(bps_stream_create(raw.baseAddress!.assumingMemoryBound(to: bps_config.self), &stream),
                         BPS_OK, "a larger size is accepted")
            if let stream { _ = bps_stream_release(stream) }
        }
    }

    // MARK: argument checking

    func testNullHandleIsAnInvalidArgumentEverywhere() {
        var raw: UnsafeMutableRawPointer? = item(1)
        var count = 7
        var u64: UInt64 = 7
        var i64: Int64 = 7
        var i32: Int32 = 7
        var policy = BPS_POLICY_REJECT
        var s = bps_stats()
        s.size = MemoryLayout<bps_stats>.size
        var items: [UnsafeMutableRawPointer?] = [item(1)]
        let visit: @convention(c) (UnsafeMutableRawPointer?, UnsafeMutableRawPointer?) -> Int32 = { _, _ in 0 }
        let checks: [(String, bps_status)] = [
            ("retain", bps_stream_retain(nil)),
            ("release", bps_stream_release(nil)),
            ("put", bps_stream_put(nil, item(1), 0, nil)),
            ("put_many", bps_stream_put_many(nil, &items, 1, 0, nil, &count)),
            ("get", bps_stream_get(nil, 0, nil, &raw)),
            ("get_many", bps_stream_get_many(nil, &items, 1, 0, nil, &count)),
            ("close", bps_stream_close(nil, 0)),
            ("close_with_error", bps_stream_close_with_error(nil, 5, "x")),
            ("failure", bps_stream_failure(nil, &i32, nil, 0, nil)),
            ("task_done", bps_stream_task_done(nil, 1)),
            ("join", bps_stream_join(nil, 0, nil)),
            ("stats", bps_stream_stats(nil, &s)),
            ("depth", bps_stream_depth(nil, &u64)),
            ("capacity", bps_stream_capacity(nil, &i64)),
            ("set_capacity", bps_stream_set_capacity(nil, 4)),
            ("policy", bps_stream_policy(nil, &policy)),
            ("is_closed", bps_stream_is_closed(nil, &i32)),
            ("visit", bps_stream_visit(nil, visit, nil, &i32)),
            ("put_frame", bps_stream_put_frame(nil, "x", 1, 0, nil)),
            ("put_frames", bps_stream_put_frames(nil, nil, 0, 0, nil, nil)),
            ("reserve", bps_stream_reserve(nil, &items, 1, 0, nil, &count)),
            ("settle", bps_stream_settle(nil, 1, nil, 0)),
            ("mark_delivered", bps_stream_mark_delivered(nil, 1)),
        ]
        for (what, status) in checks { assertStatus(status, BPS_INVALID_ARGUMENT, what) }
        XCTAssertEqual(number(raw), 1, "get's out-parameter untouched")
        XCTAssertEqual(u64, 7)
        XCTAssertEqual(i64, 7)
        XCTAssertEqual(policy, BPS_POLICY_REJECT)
        XCTAssertEqual(count, 0, "put_many writes *out_taken whatever the status; get_many leaves its count")
    }

    func testNullItemsAndOutParametersAreInvalidArguments() {
        let stream = makeStream(config(capacity: 4))
        var raw: UnsafeMutableRawPointer? = item(9)
        var items: [UnsafeMutableRawPointer?] = [nil, nil]
        var count = 99
        assertStatus(bps_stream_put(stream, nil, 0, nil), BPS_INVALID_ARGUMENT, "NULL item")
        assertStatus(bps_stream_get(stream, 0, nil, nil), BPS_INVALID_ARGUMENT, "NULL out_item")
        assertStatus(bps_stream_get_many(stream, nil, 2, 0, nil, &count), BPS_INVALID_ARGUMENT)
        assertStatus(bps_stream_get_many(stream, &items, 2, 0, nil, nil), BPS_INVALID_ARGUMENT)
        assertStatus(bps_stream_get_many(stream, &items, 0, 0, nil, &count), BPS_INVALID_ARGUMENT, "max 0")
        assertStatus(bps_stream_stats(stream, nil), BPS_INVALID_ARGUMENT)
        assertStatus(bps_stream_depth(stream, nil), BPS_INVALID_ARGUMENT)
        assertStatus(bps_stream_capacity(stream, nil), BPS_INVALID_ARGUMENT)
        assertStatus(bps_stream_policy(stream, nil), BPS_INVALID_ARGUMENT)
        assertStatus(bps_stream_is_closed(stream, nil), BPS_INVALID_ARGUMENT)
        assertStatus(bps_stream_visit(stream, nil, nil, nil), BPS_INVALID_ARGUMENT)
        assertStatus(bps_stream_failure(stream, nil, nil, 0, nil), BPS_INVALID_ARGUMENT)
        assertStatus(bps_stream_close(stream, 2), BPS_INVALID_ARGUMENT, "unknown close flag")
        var closed: Int32 = 9
        assertStatus(bps_stream_is_closed(stream, &closed), BPS_OK)
        XCTAssertEqual(closed, 0, "a rejected close closes nothing")

        // A NULL inside put_many's array: nothing is taken, not even the items before it.
        var mixed: [UnsafeMutableRawPointer?] = [item(1), nil, item(3)]
        assertStatus(bps_stream_put_many(stream, &mixed, 3, 0, nil, &count), BPS_INVALID_ARGUMENT)
        XCTAssertEqual(count, 0)
        assertStatus(bps_stream_put_many(stream, nil, 2, 0, nil, &count), BPS_INVALID_ARGUMENT)
        XCTAssertEqual(depth(stream), 0)
        XCTAssertEqual(number(raw), 9)
        raw = nil

        // A waiter too small to be a bps_waiter.
        let unused = HookRecorder()
        var small = unused.waiter()
        small.size = MemoryLayout<bps_waiter>.size - 1
        assertStatus(bps_stream_put(stream, item(1), 0, &small), BPS_INVALID_ARGUMENT)
        assertStatus(bps_stream_get(stream, 0, &small, &raw), BPS_INVALID_ARGUMENT)
        assertStatus(bps_stream_join(stream, 0, &small), BPS_INVALID_ARGUMENT)
        assertStatus(bps_stream_put_many(stream, &mixed, 1, 0, &small, &count), BPS_INVALID_ARGUMENT)
        assertStatus(bps_stream_get_many(stream, &items, 1, 0, &small, &count), BPS_INVALID_ARGUMENT)
        XCTAssertEqual(depth(stream), 0)
        XCTAssertEqual(unused.events, [], "a rejected waiter is never called")
    }

    // MARK: put and get

    func testPutGetRoundTripWritesOutParametersOnlyOnSuccess() {
        let stream = makeStream(config(capacity: 3))
        for n in 1...3 { assertStatus(bps_stream_put(stream, item(n), 0, nil), BPS_OK) }
        assertStatus(bps_stream_put(stream, item(4), 0, nil), BPS_FULL, "block + timeout 0")
        var out: UnsafeMutableRawPointer?
        for n in 1...3 {
            assertStatus(bps_stream_get(stream, -1, nil, &out), BPS_OK)
            XCTAssertEqual(number(out), n, "FIFO")
        }
        out = item(77)
        assertStatus(bps_stream_get(stream, 0, nil, &out), BPS_EMPTY)
        XCTAssertEqual(number(out), 77, "written on failure")
        let start = now()
        assertStatus(bps_stream_get(stream, 50_000_000, nil, &out), BPS_EMPTY)
        XCTAssertGreaterThanOrEqual(now() - start, 0.045)
        XCTAssertEqual(number(out), 77)

        var items = [UnsafeMutableRawPointer?](repeating: item(55), count: 4)
        var count = 66
        assertStatus(bps_stream_get_many(stream, &items, 4, 0, nil, &count), BPS_EMPTY)
        XCTAssertEqual(count, 66, "get_many's count is written only on success")
        XCTAssertEqual(items.map(number), [55, 55, 55, 55])

        var closed: Int32 = 7
        assertStatus(bps_stream_is_closed(stream, &closed), BPS_OK)
        XCTAssertEqual(closed, 0)
        assertStatus(bps_stream_close(stream, 0), BPS_OK)
        assertStatus(bps_stream_is_closed(stream, &closed), BPS_OK)
        XCTAssertEqual(closed, 1)
        assertStatus(bps_stream_get(stream, -1, nil, &out), BPS_CLOSED)
        XCTAssertEqual(number(out), 77)
        assertStatus(bps_stream_put(stream, item(5), -1, nil), BPS_CLOSED)
    }

    func testGetManyTakesOldestFirstUpToMax() {
        let stream = makeStream(config(capacity: 8))
        var items: [UnsafeMutableRawPointer?] = (1...5).map { item($0) }
        var taken = 0
        assertStatus(bps_stream_put_many(stream, &items, 5, 0, nil, &taken), BPS_OK)
        XCTAssertEqual(taken, 5)
        var out = [UnsafeMutableRawPointer?](repeating: nil, count: 3)
        var count = 0
        assertStatus(bps_stream_get_many(stream, &out, 3, 0, nil, &count), BPS_OK)
        XCTAssertEqual(count, 3)
        XCTAssertEqual(out.map(number), [1, 2, 3])
        assertStatus(bps_stream_get_many(stream, &out, 3, -1, nil, &count), BPS_OK)
        XCTAssertEqual(count, 2)
        XCTAssertEqual(out.prefix(2).map(number), [4, 5])
        assertStatus(bps_stream_close(stream, 0), BPS_OK)
        assertStatus(bps_stream_get_many(stream, &out, 3, -1, nil, &count), BPS_CLOSED)
        let s = stats(stream)
        XCTAssertEqual(s.consumed, 5)
        XCTAssertEqual(s.produced, 5)
    }

    func testPutManyWritesOutTakenOnEveryStatus() {
        var five: [UnsafeMutableRawPointer?] = (1...5).map { item($0) }
        var taken = 999

        let block = makeStream(config(capacity: 8))
        assertStatus(bps_stream_put_many(block, &five, 5, 0, nil, &taken), BPS_OK)
        XCTAssertEqual(taken, 5)
        taken = 999
        assertStatus(bps_stream_put_many(block, &five, 0, 0, nil, &taken), BPS_OK, "count 0")
        XCTAssertEqual(taken, 0)
        taken = 999
        assertStatus(bps_stream_put_many(block, nil, 0, 0, nil, &taken), BPS_OK, "count 0 with NULL items")
        XCTAssertEqual(taken, 0)
        taken = 999
        let start = now()
        assertStatus(bps_stream_put_many(block, &five, 5, 50_000_000, nil, &taken), BPS_FULL, "timeout")
        XCTAssertGreaterThanOrEqual(now() - start, 0.045)
        XCTAssertEqual(taken, 3)

        let reject = makeStream(config(capacity: 2, policy: BPS_POLICY_REJECT))
        taken = 999
        assertStatus(bps_stream_put_many(reject, &five, 5, -1, nil, &taken), BPS_FULL)
        XCTAssertEqual(taken, 2)

        let releases = makeLog()
        let newest = makeStream(config(capacity: 2, policy: BPS_POLICY_DROP_NEWEST,
                                       release: ReleaseLog.callback, context: releases.context))
        taken = 999
        assertStatus(bps_stream_put_many(newest, &five, 5, -1, nil, &taken), BPS_SHED)
        XCTAssertEqual(taken, 2, "items 3...5 were shed and stay the caller's")
        XCTAssertEqual(releases.items, [], "shed items never reach the release callback")
        let s = stats(newest)
        XCTAssertEqual(s.dropped_shed, 3)
        XCTAssertEqual(s.produced, 5)

        let cancelling = makeStream(config(capacity: 1))
        let recorder = HookRecorder(cancelOnPoll: 1)
        var waiter = recorder.waiter()
        taken = 999
        assertStatus(bps_stream_put_many(cancelling, &five, 5, -1, &waiter, &taken), BPS_CANCELLED)
        XCTAssertEqual(taken, 1)
        XCTAssertEqual(recorder.events, [BEGIN, POLL, END])

        let closed = makeStream(config(capacity: 4))
        assertStatus(bps_stream_close(closed, 0), BPS_OK)
        taken = 999
        assertStatus(bps_stream_put_many(closed, &five, 5, -1, nil, &taken), BPS_CLOSED)
        XCTAssertEqual(taken, 0)

        taken = 999
        var withNull: [UnsafeMutableRawPointer?] = [item(1), nil]
        assertStatus(bps_stream_put_many(block, &withNull, 2, 0, nil, &taken), BPS_INVALID_ARGUMENT)
        XCTAssertEqual(taken, 0)
        assertStatus(bps_stream_put_many(block, &five, 1, 0, nil, nil), BPS_FULL, "out_taken may be NULL")
    }

    func testReserveAndSettle() {
        let releases = makeLog()
        let stream = makeStream(config(capacity: 3, release: ReleaseLog.callback, context: releases.context))
        for n in 1...3 { assertStatus(bps_stream_put(stream, item(n), 0, nil), BPS_OK) }
        var out = [UnsafeMutableRawPointer?](repeating: nil, count: 3)
        var count = 0
        assertStatus(bps_stream_reserve(stream, &out, 3, 0, nil, &count), BPS_OK)
        XCTAssertEqual(count, 3)
        XCTAssertEqual(out.map(number), [1, 2, 3])
        XCTAssertEqual(depth(stream), 3, "reserved items stay in the depth")
        assertStatus(bps_stream_put(stream, item(4), 0, nil), BPS_FULL, "and hold their room")

        // Delivered 1; 2 and 3 go back to the front.
        var returned: [UnsafeMutableRawPointer?] = [item(2), item(3)]
        assertStatus(bps_stream_settle(stream, 1, &returned, 2), BPS_OK)
        var s = stats(stream)
        XCTAssertEqual(s.consumed, 1)
        XCTAssertEqual(s.depth, 2)
        XCTAssertEqual(s.produced, s.consumed + s.dropped + s.depth)
        assertStatus(bps_stream_put(stream, item(4), 0, nil), BPS_OK)

        // mark_delivered (no lock): the room the delivered items held is the next put's.
        assertStatus(bps_stream_reserve(stream, &out, 3, 0, nil, &count), BPS_OK)
        XCTAssertEqual(out.prefix(count).map(number), [2, 3, 4])
        assertStatus(bps_stream_mark_delivered(stream, 3), BPS_OK)
        assertStatus(bps_stream_put(stream, item(5), 0, nil), BPS_OK)
        s = stats(stream)
        XCTAssertEqual(s.consumed, 4)
        XCTAssertEqual(s.depth, 1)
        XCTAssertEqual(s.producer_waits, 0)

        // Bad arguments change nothing.
        var withNull: [UnsafeMutableRawPointer?] = [item(7), nil]
        assertStatus(bps_stream_settle(stream, 0, &withNull, 2), BPS_INVALID_ARGUMENT)
        assertStatus(bps_stream_settle(stream, 0, nil, 1), BPS_INVALID_ARGUMENT)
        assertStatus(bps_stream_put(stream, nil, 0, nil), BPS_INVALID_ARGUMENT)
        assertStatus(bps_stream_reserve(stream, &out, 0, 0, nil, &count), BPS_INVALID_ARGUMENT)
        assertStatus(bps_stream_reserve(stream, nil, 1, 0, nil, &count), BPS_INVALID_ARGUMENT)
        assertStatus(bps_stream_reserve(stream, &out, 1, 0, nil, nil), BPS_INVALID_ARGUMENT)
        XCTAssertEqual(depth(stream), 1)

        // After an immediate close, handed-back items go to the release callback.
        assertStatus(bps_stream_reserve(stream, &out, 3, 0, nil, &count), BPS_OK)
        XCTAssertEqual(count, 1)
        assertStatus(bps_stream_close(stream, BPS_CLOSE_IMMEDIATE), BPS_OK)
        var late: [UnsafeMutableRawPointer?] = [item(5)]
        assertStatus(bps_stream_settle(stream, 0, &late, 1), BPS_OK)
        XCTAssertEqual(releases.items, [5])
        s = stats(stream)
        XCTAssertEqual(s.dropped_on_close, 1)
        XCTAssertEqual(s.depth, 0)
        assertStatus(bps_stream_reserve(stream, &out, 3, -1, nil, &count), BPS_CLOSED)
    }

    // MARK: ownership: the release callback

    func testReleaseCallbackRunsOncePerDroppedItemWithItsOwnContext() {
        // Two streams, two logs: each callback call must carry its own stream's context.
        let evictions = makeLog()
        let clearings = makeLog()
        let oldest = makeStream(config(capacity: 2, policy: BPS_POLICY_DROP_OLDEST,
                                       release: ReleaseLog.callback, context: evictions.context))
        let all = makeStream(config(capacity: 2, policy: BPS_POLICY_DROP_ALL,
                                    release: ReleaseLog.callback, context: clearings.context))
        for n in 1...5 {
            assertStatus(bps_stream_put(oldest, item(n), 0, nil), BPS_OK)
            assertStatus(bps_stream_put(all, item(100 + n), 0, nil), BPS_OK)
        }
        XCTAssertEqual(evictions.items, [1, 2, 3], "released before put returned, oldest first")
        XCTAssertEqual(clearings.items, [101, 102, 103, 104])
        XCTAssertEqual(drain(oldest), [4, 5])
        XCTAssertEqual(drain(all), [105])
        XCTAssertEqual(evictions.items, [1, 2, 3], "taken items are the caller's, never released")

        let discards = makeLog()
        let closing = makeStream(config(capacity: 8, release: ReleaseLog.callback, context: discards.context))
        for n in 1...4 { assertStatus(bps_stream_put(closing, item(n), 0, nil), BPS_OK) }
        assertStatus(bps_stream_close(closing, 0), BPS_OK)
        XCTAssertEqual(discards.items, [], "a plain close keeps the backlog readable")
        var out: UnsafeMutableRawPointer?
        assertStatus(bps_stream_get(closing, 0, nil, &out), BPS_OK)
        assertStatus(bps_stream_close(closing, BPS_CLOSE_IMMEDIATE), BPS_OK)
        XCTAssertEqual(discards.items, [2, 3, 4], "a second, immediate close still discards")
        assertStatus(bps_stream_close(closing, BPS_CLOSE_IMMEDIATE), BPS_OK)
        XCTAssertEqual(discards.items, [2, 3, 4], "exactly once")
        let s = stats(closing)
        XCTAssertEqual(s.dropped_on_close, 3)
        XCTAssertEqual(s.dropped, 3)
    }

    func testLastReleaseReleasesLeftoversAndRetainKeepsTheStreamAlive() {
        let leftovers = makeLog()
        var cfg = config(capacity: 8, release: ReleaseLog.callback, context: leftovers.context)
        var created: OpaquePointer?
        assertStatus(bps_stream_create(&cfg, &created), BPS_OK)
        let stream = created!
        for n in 1...3 { assertStatus(bps_stream_put(stream, item(n), 0, nil), BPS_OK) }
        assertStatus(bps_stream_retain(stream), BPS_OK)
        assertStatus(bps_stream_release(stream), BPS_OK)
        XCTAssertEqual(leftovers.items, [], "one reference is left: nothing released")
        // Still fully usable through the remaining reference.
        assertStatus(bps_stream_put(stream, item(4), 0, nil), BPS_OK)
        var out: UnsafeMutableRawPointer?
        assertStatus(bps_stream_get(stream, 0, nil, &out), BPS_OK)
        XCTAssertEqual(number(out), 1)
        XCTAssertEqual(depth(stream), 3)
        assertStatus(bps_stream_release(stream), BPS_OK)
        XCTAssertEqual(leftovers.items, [2, 3, 4], "the last release hands every leftover over, once")
    }

    func testShedRejectedAndClosedItemsStayWithTheCaller() {
        let releases = makeLog()
        let newest = makeStream(config(capacity: 1, policy: BPS_POLICY_DROP_NEWEST,
                                       release: ReleaseLog.callback, context: releases.context))
        assertStatus(bps_stream_put(newest, item(1), 0, nil), BPS_OK)
        assertStatus(bps_stream_put(newest, item(2), -1, nil), BPS_SHED)
        let reject = makeStream(config(capacity: 1, policy: BPS_POLICY_REJECT,
                                       release: ReleaseLog.callback, context: releases.context))
        assertStatus(bps_stream_put(reject, item(3), 0, nil), BPS_OK)
        assertStatus(bps_stream_put(reject, item(4), -1, nil), BPS_FULL)
        assertStatus(bps_stream_close(reject, 0), BPS_OK)
        assertStatus(bps_stream_put(reject, item(5), -1, nil), BPS_CLOSED)
        XCTAssertEqual(releases.items, [], "the caller still owns 2, 4 and 5")
        let s = stats(newest)
        XCTAssertEqual(s.dropped_shed, 1)
        XCTAssertEqual(s.produced, 2)
        XCTAssertEqual(stats(reject).rejected, 1)
        // Release both streams now: only the stored items (1 and 3) come back.
        for stream in streams { _ = bps_stream_release(stream) }
        streams = []
        XCTAssertEqual(releases.items.sorted(), [1, 3])
    }

    // MARK: wait hooks

    func testWaitHookSeesBeginPollsEndAndCancelsOnTheNthPoll() {
        let stream = makeStream(config(capacity: 1))
        let recorder = HookRecorder(cancelOnPoll: 3)
        var waiter = recorder.waiter(pollIntervalNanoseconds: 2_000_000)
        var out: UnsafeMutableRawPointer? = item(42)
        assertStatus(bps_stream_get(stream, -1, &waiter, &out), BPS_CANCELLED)
        XCTAssertEqual(recorder.events, [BEGIN, POLL, POLL, POLL, END])
        XCTAssertEqual(number(out), 42, "nothing moved")

        assertStatus(bps_stream_put(stream, item(1), 0, nil), BPS_OK)
        let putRecorder = HookRecorder(cancelOnPoll: 2)
        var putWaiter = putRecorder.waiter(pollIntervalNanoseconds: 2_000_000)
        assertStatus(bps_stream_put(stream, item(2), -1, &putWaiter), BPS_CANCELLED)
        XCTAssertEqual(putRecorder.events, [BEGIN, POLL, POLL, END])
        XCTAssertEqual(drain(stream), [1], "the cancelled put stored nothing")
        XCTAssertEqual(stats(stream).rejected, 0)

        assertStatus(bps_stream_put(stream, item(3), 0, nil), BPS_OK)
        let joinRecorder = HookRecorder(cancelOnPoll: 1)
        var joinWaiter = joinRecorder.waiter()
        assertStatus(bps_stream_join(stream, -1, &joinWaiter), BPS_CANCELLED)
        XCTAssertEqual(joinRecorder.events, [BEGIN, POLL, END])

        var items = [UnsafeMutableRawPointer?](repeating: nil, count: 2)
        var count = 5
        _ = drain(stream)
        let manyRecorder = HookRecorder(cancelOnPoll: 2)
        var manyWaiter = manyRecorder.waiter()
        assertStatus(bps_stream_get_many(stream, &items, 2, -1, &manyWaiter, &count), BPS_CANCELLED)
        XCTAssertEqual(count, 5)
        XCTAssertEqual(manyRecorder.events, [BEGIN, POLL, POLL, END])
    }

    func testWaitHookRunsOnlyWhenTheCallWaits() {
        let stream = makeStream(config(capacity: 2))
        let recorder = HookRecorder(cancelOnPoll: 1)
        var waiter = recorder.waiter()
        var out: UnsafeMutableRawPointer?
        assertStatus(bps_stream_put(stream, item(1), -1, &waiter), BPS_OK)
        assertStatus(bps_stream_get(stream, -1, &waiter, &out), BPS_OK)
        assertStatus(bps_stream_get(stream, 0, &waiter, &out), BPS_EMPTY, "timeout 0 never waits")
        XCTAssertEqual(recorder.events, [])

        // A waiter without a hook, or with polling off, simply waits out the timeout.
        var noHook = bps_waiter(size: MemoryLayout<bps_waiter>.size, poll_interval_ns: 1_000_000,
                                hook: nil, context: nil)
        assertStatus(bps_stream_get(stream, 20_000_000, &noHook, &out), BPS_EMPTY)
        let quiet = HookRecorder(cancelOnPoll: 1)
        var noPolls = quiet.waiter(pollIntervalNanoseconds: 0)
        assertStatus(bps_stream_get(stream, 20_000_000, &noPolls, &out), BPS_EMPTY)
        XCTAssertEqual(quiet.events, [BEGIN, END])
    }

    func testBlockedGetIsWokenByAPutFromAnotherThreadWithBalancedHooks() {
        let stream = makeStream(config(capacity: 2))
        let handle = Handle(raw: stream)
        let recorder = HookRecorder()
        let flagBox = FlagBox()
        let producer = spawn {
            usleep(100_000)
            flagBox.set()
            _ = bps_stream_put(handle.raw, item(8), 0, nil)
        }
        var waiter = recorder.waiter()
        var out: UnsafeMutableRawPointer?
        assertStatus(bps_stream_get(stream, 30_000_000_000, &waiter, &out), BPS_OK)
        XCTAssertTrue(flagBox.isSet, "get returned before the put: it did not block")
        XCTAssertEqual(number(out), 8)
        XCTAssertTrue(producer(20))
        let events = recorder.events
        XCTAssertEqual(events.first, BEGIN)
        XCTAssertEqual(events.last, END)
        XCTAssertEqual(events.filter { $0 == BEGIN }.count, 1)
        XCTAssertEqual(events.filter { $0 == END }.count, 1)
        XCTAssertGreaterThan(events.filter { $0 == POLL }.count, 0)
    }

    /// A poll interval of INT64_MAX ("practically never") must not trap: the thunks promise
    /// never to trap on a caller's values. Run in a child process, since a trap kills it.
    func testHugePollIntervalDoesNotCrash() throws {
        let stream = makeStream(config(capacity: 1))
        assertStatus(bps_stream_put(stream, item(1), 0, nil), BPS_OK)
        let recorder = HookRecorder()
        var waiter = recorder.waiter(pollIntervalNanoseconds: Int64.max)
        var out: UnsafeMutableRawPointer?
        fflush(nil)
        let pid = fork()
        XCTAssertGreaterThanOrEqual(pid, 0, "fork failed")
        if pid == 0 {
            // Child: one blocking put with a short timeout and one get; exit 0 if both behave.
            let put = bps_stream_put(stream, item(2), 10_000_000, &waiter)
            let get = bps_stream_get(stream, 10_000_000, &waiter, &out)
            _exit(put == BPS_FULL && get == BPS_OK ? 0 : 3)
        }
        var status: Int32 = 0
        let deadline = now() + 30
        while waitpid(pid, &status, WNOHANG) == 0 {
            if now() > deadline {
                kill(pid, SIGKILL)
                _ = waitpid(pid, &status, 0)
                return XCTFail("the child hung")
            }
            usleep(10_000)
        }
        let signal = status & 0x7f
        let exitCode = (status >> 8) & 0xff
        XCTAssertEqual(signal, 0, "bps_stream_put with poll_interval_ns = INT64_MAX killed the process (signal \(signal))")
        if signal == 0 { XCTAssertEqual(exitCode, 0, "wrong statuses in the child") }
    }

    // MARK: stats, visit, capacity, tasks

    func testStatsSnapshotAndSizeCheck() {
        let stream = makeStream(config(capacity: 2, policy: BPS_POLICY_DROP_OLDEST))
        for n in 1...5 { assertStatus(bps_stream_put(stream, item(n), 0, nil), BPS_OK) }
        var out: UnsafeMutableRawPointer?
        assertStatus(bps_stream_get(stream, 0, nil, &out), BPS_OK)
        let s = stats(stream)
        XCTAssertEqual(s.size, MemoryLayout<bps_stats>.size)
        XCTAssertEqual(s.produced, 5)
        XCTAssertEqual(s.consumed, 1)
        XCTAssertEqual(s.dropped_evicted, 3)
        XCTAssertEqual(s.dropped, s.dropped_shed + s.dropped_evicted + s.dropped_cleared + s.dropped_on_close)
        XCTAssertEqual(s.depth, 1)
        XCTAssertEqual(s.peak_depth, 2)
        XCTAssertEqual(s.capacity, 2)
        XCTAssertEqual(s.backpressure_events, 3)
        XCTAssertEqual(s.unfinished_tasks, 2)
        XCTAssertEqual(s.closed, 0)
        XCTAssertEqual(s.produced, s.consumed + s.dropped + s.depth)
        XCTAssertGreaterThanOrEqual(s.produced_per_second, 0)
        XCTAssertGreaterThanOrEqual(s.consumed_per_second, 0)
        XCTAssertGreaterThanOrEqual(s.window_seconds, 0)

        var small = bps_stats()
        small.size = MemoryLayout<bps_stats>.size - 1
        small.produced = 12345
        assertStatus(bps_stream_stats(stream, &small), BPS_INVALID_ARGUMENT)
        XCTAssertEqual(small.produced, 12345, "untouched on failure")
        small.size = 0
        assertStatus(bps_stream_stats(stream, &small), BPS_INVALID_ARGUMENT)

        let unbounded = makeStream(config(capacity: BPS_CAPACITY_UNBOUNDED))
        assertStatus(bps_stream_close(unbounded, 0), BPS_OK)
        let u = stats(unbounded)
        XCTAssertEqual(u.capacity, BPS_CAPACITY_UNBOUNDED)
        XCTAssertEqual(u.closed, 1)
    }

    func testVisitStopsAtTheFirstNonzeroResultAndReportsIt() {
        let stream = makeStream(config(capacity: 8))
        for n in 1...5 { assertStatus(bps_stream_put(stream, item(n), 0, nil), BPS_OK) }
        final class Visits { var seen: [Int] = []; var stopAt = 0 }
        let visits = Visits()
        let visit: @convention(c) (UnsafeMutableRawPointer?, UnsafeMutableRawPointer?) -> Int32 = { item, context in
            let visits = Unmanaged<Visits>.fromOpaque(context!).takeUnretainedValue()
            visits.seen.append(number(item))
            return number(item) == visits.stopAt ? 42 : 0
        }
        let context = Unmanaged.passUnretained(visits).toOpaque()
        var result: Int32 = -1
        visits.stopAt = 3
        assertStatus(bps_stream_visit(stream, visit, context, &result), BPS_OK)
        XCTAssertEqual(result, 42)
        XCTAssertEqual(visits.seen, [1, 2, 3], "oldest first, stopping at the nonzero result")
        visits.seen = []
        visits.stopAt = 0
        assertStatus(bps_stream_visit(stream, visit, context, &result), BPS_OK)
        XCTAssertEqual(result, 0)
        XCTAssertEqual(visits.seen, [1, 2, 3, 4, 5])
        XCTAssertEqual(depth(stream), 5, "visiting moves nothing")
    }

    func testSetCapacityRejectsBadValuesAndWakesBlockedPutters() {
        let stream = makeStream(config(capacity: 2))
        for bad: Int64 in [0, -2, Int64(BPS_CAPACITY_MAX) + 1, Int64.min, Int64.max] {
            assertStatus(bps_stream_set_capacity(stream, bad), BPS_INVALID_ARGUMENT, "capacity \(bad)")
            var capacity: Int64 = 0
            assertStatus(bps_stream_capacity(stream, &capacity), BPS_OK)
            XCTAssertEqual(capacity, 2, "unchanged after \(bad)")
        }
        assertStatus(bps_stream_set_capacity(stream, Int64(BPS_CAPACITY_MAX)), BPS_OK)
        assertStatus(bps_stream_set_capacity(stream, BPS_CAPACITY_UNBOUNDED), BPS_OK)
        var capacity: Int64 = 0
        assertStatus(bps_stream_capacity(stream, &capacity), BPS_OK)
        XCTAssertEqual(capacity, BPS_CAPACITY_UNBOUNDED)
        assertStatus(bps_stream_set_capacity(stream, 1), BPS_OK)
        assertStatus(bps_stream_put(stream, item(1), 0, nil), BPS_OK)

        let handle = Handle(raw: stream)
        let grower = spawn { usleep(100_000); _ = bps_stream_set_capacity(handle.raw, 2) }
        let start = now()
        assertStatus(bps_stream_put(stream, item(2), 30_000_000_000, nil), BPS_OK)
        XCTAssertGreaterThanOrEqual(now() - start, 0.05, "the put did not wait for the capacity to grow")
        XCTAssertTrue(grower(20))
        XCTAssertEqual(drain(stream), [1, 2])
    }

    func testTaskDoneAndJoin() {
        let stream = makeStream(config(capacity: 4))
        assertStatus(bps_stream_join(stream, 0, nil), BPS_OK, "nothing unfinished")
        assertStatus(bps_stream_put(stream, item(1), 0, nil), BPS_OK)
        assertStatus(bps_stream_put(stream, item(2), 0, nil), BPS_OK)
        assertStatus(bps_stream_join(stream, 0, nil), BPS_TIMED_OUT)
        let start = now()
        assertStatus(bps_stream_join(stream, 50_000_000, nil), BPS_TIMED_OUT)
        XCTAssertGreaterThanOrEqual(now() - start, 0.045)
        assertStatus(bps_stream_task_done(stream, 3), BPS_INVALID_STATE)
        XCTAssertEqual(stats(stream).unfinished_tasks, 2, "nothing changed")
        assertStatus(bps_stream_task_done(stream, 1), BPS_OK)
        assertStatus(bps_stream_task_done(stream, 1), BPS_OK)
        assertStatus(bps_stream_task_done(stream, 1), BPS_INVALID_STATE)
        assertStatus(bps_stream_join(stream, -1, nil), BPS_OK)
        XCTAssertEqual(depth(stream), 2, "tasks are not items")
    }

    // MARK: close with a producer's error

    func testCloseWithErrorDrainsThenFailsAndReportsTheError() {
        let stream = makeStream(config(capacity: 4))
        var code: Int32 = 77
        assertStatus(bps_stream_failure(stream, &code, nil, 0, nil), BPS_INVALID_STATE, "not closed yet")
        XCTAssertEqual(code, 77)
        assertStatus(bps_stream_put(stream, item(1), 0, nil), BPS_OK)
        assertStatus(bps_stream_close_with_error(stream, EIO, "disk on fire"), BPS_OK)
        assertStatus(bps_stream_put(stream, item(2), 0, nil), BPS_CLOSED)
        var out: UnsafeMutableRawPointer?
        assertStatus(bps_stream_get(stream, -1, nil, &out), BPS_OK, "items put before the error come first")
        XCTAssertEqual(number(out), 1)
        out = item(9)
        assertStatus(bps_stream_get(stream, -1, nil, &out), BPS_FAILED)
        assertStatus(bps_stream_get(stream, 0, nil, &out), BPS_FAILED, "every get after the drain")
        XCTAssertEqual(number(out), 9)
        var items = [UnsafeMutableRawPointer?](repeating: nil, count: 2)
        var count = 0
        assertStatus(bps_stream_get_many(stream, &items, 2, -1, nil, &count), BPS_FAILED)

        var buffer = [CChar](repeating: 0x7f, count: 32)
        var length = 0
        assertStatus(bps_stream_failure(stream, &code, &buffer, 32, &length), BPS_OK)
        XCTAssertEqual(code, EIO)
        XCTAssertEqual(cString(buffer), "disk on fire")
        XCTAssertEqual(length, 12)

        buffer = [CChar](repeating: 0x7f, count: 8)
        assertStatus(bps_stream_failure(stream, &code, &buffer, 5, &length), BPS_OK)
        XCTAssertEqual(cString(buffer), "disk", "cut to fit and NUL-terminated")
        XCTAssertEqual(length, 12, "the full length")
        XCTAssertEqual(buffer[5], 0x7f, "nothing written past capacity")
        buffer = [CChar](repeating: 0x7f, count: 2)
        assertStatus(bps_stream_failure(stream, &code, &buffer, 0, nil), BPS_OK)
        XCTAssertEqual(buffer, [0x7f, 0x7f], "capacity 0: nothing written")
        assertStatus(bps_stream_failure(stream, &code, nil, 0, &length), BPS_OK)

        assertStatus(bps_stream_close_with_error(stream, 1, "later"), BPS_OK, "ignored once closed")
        buffer = [CChar](repeating: 0, count: 32)
        assertStatus(bps_stream_failure(stream, &code, &buffer, 32, nil), BPS_OK)
        XCTAssertEqual(code, EIO)
        XCTAssertEqual(cString(buffer), "disk on fire")
    }

    func testCloseWithErrorEdgeCases() {
        let plain = makeStream(config(capacity: 4))
        assertStatus(bps_stream_close(plain, 0), BPS_OK)
        assertStatus(bps_stream_close_with_error(plain, 5, "too late"), BPS_OK)
        var code: Int32 = 77
        assertStatus(bps_stream_failure(plain, &code, nil, 0, nil), BPS_INVALID_STATE)
        XCTAssertEqual(code, 77)
        var out: UnsafeMutableRawPointer?
        assertStatus(bps_stream_get(plain, 0, nil, &out), BPS_CLOSED)

        let noMessage = makeStream(config(capacity: 4))
        assertStatus(bps_stream_close_with_error(noMessage, 0, nil), BPS_OK)
        var buffer = [CChar](repeating: 0x7f, count: 4)
        var length = 99
        assertStatus(bps_stream_failure(noMessage, &code, &buffer, 4, &length), BPS_OK)
        XCTAssertEqual(code, 0)
        XCTAssertEqual(buffer[0], 0, "NULL message reads back as \"\"")
        XCTAssertEqual(length, 0)
        assertStatus(bps_stream_get(noMessage, 0, nil, &out), BPS_FAILED)
    }

    // MARK: frames

    func testFramesCarryACopyOfTheBytes() throws {
        var bytes: [UInt8] = Array("hello, frame".utf8)
        var frame: UnsafeMutableRawPointer?
        assertStatus(bps_frame_new(&bytes, bytes.count, &frame), BPS_OK)
        bytes[0] = UInt8(ascii: "J")  // the frame holds its own copy
        let made = try XCTUnwrap(frame)
        XCTAssertEqual(bps_item_is_frame(made), 1)
        XCTAssertEqual(frameBytes(made), Array("hello, frame".utf8))
        bps_frame_free(made)

        var empty: UnsafeMutableRawPointer?
        assertStatus(bps_frame_new(nil, 0, &empty), BPS_OK, "an empty frame needs no data")
        XCTAssertEqual(frameBytes(try XCTUnwrap(empty)), [])
        bps_frame_free(empty)

        var untouched: UnsafeMutableRawPointer? = item(3)
        assertStatus(bps_frame_new(nil, 4, &untouched), BPS_INVALID_ARGUMENT)
        assertStatus(bps_frame_new(&bytes, 4, nil), BPS_INVALID_ARGUMENT)
        XCTAssertEqual(number(untouched), 3)
        XCTAssertEqual(bps_item_is_frame(item(3)), 0, "2-aligned pointers are never frames")
        bps_frame_free(nil)
        bps_frame_free(item(3))  // not a frame: nothing happens
    }

    func testTheDeliveryCounterMarksDeliveriesInline() throws {
        var config = bps_config(size: MemoryLayout<bps_config>.size, capacity: 3,
                                policy: BPS_POLICY_REJECT, release: nil, release_context: nil)
        var stream: OpaquePointer?
        assertStatus(bps_stream_create(&config, &stream), BPS_OK)
        defer { bps_stream_release(stream) }
        for i in 1...3 { assertStatus(bps_stream_put(stream, item(i), 0, nil), BPS_OK) }
        var out: [UnsafeMutableRawPointer?] = [nil, nil, nil]
        var count = 0
        assertStatus(bps_stream_reserve(stream, &out, 3, 0, nil, &count), BPS_OK)
        assertStatus(bps_stream_put(stream, item(4), 0, nil), BPS_FULL, "reserved items hold room")
        var counter: UnsafeMutableRawPointer?
        assertStatus(bps_stream_delivery_counter(stream, &counter), BPS_OK)
        assertStatus(bps_stream_delivery_counter(stream, nil), BPS_INVALID_ARGUMENT)
        // What a C consumer does inline: an atomic add on the word (2 items delivered).
        let word = try XCTUnwrap(counter).assumingMemoryBound(to: Int.self)
        bps_test_atomic_add(word, 2)
        let s = stats(try XCTUnwrap(stream))
        XCTAssertEqual(s.consumed, 2)
        XCTAssertEqual(s.depth, 1)
        XCTAssertEqual(s.produced, s.consumed + s.dropped + s.depth)
        assertStatus(bps_stream_put(stream, item(4), 0, nil), BPS_OK, "their room is free")
    }

    func testAbsurdFrameLengthsAreRefusedNotTrapped() throws {
        var bytes: [UInt8] = [1, 2, 3]
        var untouched: UnsafeMutableRawPointer? = item(5)
        assertStatus(bps_frame_new(&bytes, Int.max - 4, &untouched), BPS_INVALID_ARGUMENT)
        XCTAssertEqual(number(untouched), 5)
        var config = bps_config(size: MemoryLayout<bps_config>.size, capacity: 4,
                                policy: BPS_POLICY_BLOCK, release: nil, release_context: nil)
        var stream: OpaquePointer?
        assertStatus(bps_stream_create(&config, &stream), BPS_OK)
        defer { bps_stream_release(stream) }
        assertStatus(bps_stream_put_frame(stream, &bytes, Int.max, 0, nil), BPS_INVALID_ARGUMENT)
        try bytes.withUnsafeBytes { raw in
            var ranges = [bps_bytes(data: raw.baseAddress, length: 3),
                          bps_bytes(data: raw.baseAddress, length: Int.max / 2)]
            var taken = 7
            assertStatus(bps_stream_put_frames(stream, &ranges, 2, 0, nil, &taken),
                         BPS_INVALID_ARGUMENT)
            XCTAssertEqual(taken, 0)
            var depth: UInt64 = 9
            assertStatus(bps_stream_depth(stream, &depth), BPS_OK)
            XCTAssertEqual(depth, 0, "a refused batch puts nothing")
            // A size_t length of 2^64 - 32 (what a negative C length becomes) is refused
            // too; it once made the slab too small for the frames written into it.
            ranges = [bps_bytes(data: raw.baseAddress, length: -32),
                      bps_bytes(data: raw.baseAddress, length: 3),
                      bps_bytes(data: raw.baseAddress, length: 3)]
            taken = 7
            assertStatus(bps_stream_put_frames(stream, &ranges, 3, 0, nil, &taken),
                         BPS_INVALID_ARGUMENT)
            XCTAssertEqual(taken, 0)
            assertStatus(bps_stream_put_frame(stream, raw.baseAddress, -32, 0, nil),
                         BPS_INVALID_ARGUMENT)
            assertStatus(bps_stream_depth(stream, &depth), BPS_OK)
            XCTAssertEqual(depth, 0)
            _ = try XCTUnwrap(raw.baseAddress)
        }
    }

    func testPutFramesPutsCopiesAndReportsWhatWasTaken() throws {
        let stream = makeStream(config(capacity: 2, policy: BPS_POLICY_REJECT))
        let texts = ["one", "", "three"]
        let storage = texts.map { Array($0.utf8) }
        var taken = 99
        let status = storage[0].withUnsafeBytes { a in
            storage[1].withUnsafeBytes { b in
                storage[2].withUnsafeBytes { c in
                    var ranges = [bps_bytes(data: a.baseAddress, length: a.count),
                                  bps_bytes(data: b.count > 0 ? b.baseAddress : nil, length: b.count),
                                  bps_bytes(data: c.baseAddress, length: c.count)]
                    return bps_stream_put_frames(stream, &ranges, 3, 0, nil, &taken)
                }
            }
        }
        assertStatus(status, BPS_FULL, "capacity 2, reject")
        XCTAssertEqual(taken, 2)
        let (frames, end) = readAll(stream, timeout: 0)
        assertStatus(end, BPS_EMPTY)
        XCTAssertEqual(frames, [Array("one".utf8), []])

        var bad = [bps_bytes(data: nil, length: 3)]
        taken = 99
        assertStatus(bps_stream_put_frames(stream, &bad, 1, 0, nil, &taken), BPS_INVALID_ARGUMENT)
        XCTAssertEqual(taken, 0)
        taken = 99
        assertStatus(bps_stream_put_frames(stream, nil, 0, 0, nil, &taken), BPS_OK)
        XCTAssertEqual(taken, 0)
        XCTAssertEqual(depth(stream), 0)
    }

    func testPutFramesMixesSmallAndLargeFramesInOrder() throws {
        // Small frames share one allocation, larger ones have their own: invisible to the
        // consumer, who gets every frame's bytes in order, and frees them in any order.
        let stream = makeStream(config(capacity: 8, policy: BPS_POLICY_REJECT))
        let lengths = [3, Int(BPS_FRAME_SHARED_MAX) + 1, 0, 100_000, Int(BPS_FRAME_SHARED_MAX), 5]
        let storage = lengths.enumerated().map { i, n in [UInt8](repeating: UInt8(i + 1), count: n) }
        var taken = 0
        let pointers = storage.map { bytes in
            let raw = UnsafeMutableRawPointer.allocate(byteCount: Swift.max(bytes.count, 1), alignment: 1)
            raw.copyMemory(from: bytes, byteCount: bytes.count)
            return raw
        }
        defer { for p in pointers { p.deallocate() } }
        var ranges = zip(pointers, lengths).map { bps_bytes(data: $0, length: $1) }
        assertStatus(bps_stream_put_frames(stream, &ranges, ranges.count, 0, nil, &taken), BPS_OK)
        XCTAssertEqual(taken, lengths.count)
        var got = [UnsafeMutableRawPointer?](repeating: nil, count: lengths.count)
        var n = 0
        assertStatus(bps_stream_get_many(stream, &got, got.count, 0, nil, &n), BPS_OK)
        XCTAssertEqual(got.compactMap { $0.map(frameBytes) }, storage)
        bps_frame_free(got[3])             // the large one first, alone
        got[3] = nil
        bps_frames_free(&got, got.count)   // then the rest together
        // A batch the stream takes only part of: the frames not taken are freed by the put.
        var more = Array(ranges[..<3])
        for _ in 0..<6 { assertStatus(bps_stream_put_frame(stream, "x", 1, 0, nil), BPS_OK) }
        assertStatus(bps_stream_put_frames(stream, &more, more.count, 0, nil, &taken), BPS_FULL)
        XCTAssertEqual(taken, 2)
        XCTAssertEqual(depth(stream), 8)
        XCTAssertEqual(readAll(stream, timeout: 0).0.count, 8)  // and frees them
    }

    func testFramesFreeReleasesABatchOfMixedItems() throws {
        /// Puts `count` frames of 8 bytes in one call (one slab) and takes them back.
        func slabFrames(_ stream: OpaquePointer, _ count: Int) -> [UnsafeMutableRawPointer?] {
            var values = Array(0..<Int64(count))
            var got = [UnsafeMutableRawPointer?](repeating: nil, count: count)
            var taken = 0
            values.withUnsafeMutableBytes { raw in
                var ranges = (0..<count).map { bps_bytes(data: raw.baseAddress! + 8 * $0, length: 8) }
                assertStatus(bps_stream_put_frames(stream, &ranges, count, 0, nil, &taken), BPS_OK)
            }
            var n = 0
            assertStatus(bps_stream_get_many(stream, &got, count, 0, nil, &n), BPS_OK)
            XCTAssertEqual(n, count)
            return got
        }
        let stream = makeStream(config(capacity: 1024, policy: BPS_POLICY_REJECT))
        var standalone: UnsafeMutableRawPointer?
        assertStatus(bps_frame_new("abc", 3, &standalone), BPS_OK)
        // Two slabs, interleaved with a standalone frame, a binding's item and NULL; the
        // second slab is freed partly here and partly frame by frame.
        let first = slabFrames(stream, 64), second = slabFrames(stream, 64)
        XCTAssertEqual(frameBytes(try XCTUnwrap(first[5])), Array(withUnsafeBytes(of: Int64(5)) { Array($0) }))
        var batch = Array(first[..<32] + [standalone, item(7), nil] + first[32...] + second[..<10])
        bps_frames_free(&batch, batch.count)
        for frame in second[10...] { bps_frame_free(frame) }
        bps_frames_free(nil, 0)

        // Freed for real: 20,000 slabs (about 30 MB) go through and the process does not grow.
        func residentBytes() -> Int {
            guard let file = fopen("/proc/self/statm", "r") else { return 0 }
            defer { fclose(file) }
            var size = 0, resident = 0
            withUnsafeMutablePointer(to: &size) { sizePointer in
                withUnsafeMutablePointer(to: &resident) { residentPointer in
                    _ = withVaList([sizePointer, residentPointer]) { vfscanf(file, "%ld %ld", $0) }
                }
            }
            return resident * Int(sysconf(Int32(_SC_PAGESIZE)))
        }
        var frames = slabFrames(stream, 128)
        bps_frames_free(&frames, frames.count)
        let before = residentBytes()
        for _ in 0..<10_000 {
            var frames = slabFrames(stream, 64) + slabFrames(stream, 64)
            bps_frames_free(&frames, frames.count)
        }
        XCTAssertGreaterThan(before, 0)
        XCTAssertLessThan(residentBytes() - before, 8 << 20, "the slabs were freed")
        XCTAssertEqual(depth(stream), 0)
    }

    func testPutFrameRoundTrip() throws {
        let stream = makeStream(config(capacity: 2, policy: BPS_POLICY_REJECT))
        assertStatus(bps_stream_put_frame(stream, "abc", 3, 0, nil), BPS_OK)
        assertStatus(bps_stream_put_frame(stream, nil, 0, 0, nil), BPS_OK)
        assertStatus(bps_stream_put_frame(stream, "x", 1, 0, nil), BPS_FULL, "the copy is freed, the data stays ours")
        assertStatus(bps_stream_put_frame(stream, nil, 1, 0, nil), BPS_INVALID_ARGUMENT)
        assertStatus(bps_stream_put(stream, item(1), 0, nil), BPS_FULL)
        var out: UnsafeMutableRawPointer?
        assertStatus(bps_stream_get(stream, 0, nil, &out), BPS_OK)
        XCTAssertEqual(bps_item_is_frame(out), 1)
        XCTAssertEqual(frameBytes(try XCTUnwrap(out)), Array("abc".utf8))
        bps_frame_free(out)
        assertStatus(bps_stream_get(stream, 0, nil, &out), BPS_OK)
        XCTAssertEqual(frameBytes(try XCTUnwrap(out)), [])
        bps_frame_free(out)
    }

    private func frameBytes(_ item: UnsafeMutableRawPointer) -> [UInt8] {
        let frame = bps_item_frame(item)!
        let length = frame.pointee.length
        let data = UnsafeRawPointer(frame) + MemoryLayout<Int>.size
        return Array(UnsafeRawBufferPointer(start: data, count: length))
    }

    // MARK: readers

    /// Gets frames until the stream ends; returns their bytes and the ending status.
    private func readAll(_ stream: OpaquePointer, timeout: Int64 = 20_000_000_000) -> ([[UInt8]], bps_status) {
        var frames: [[UInt8]] = []
        var out: UnsafeMutableRawPointer?
        while true {
            let status = bps_stream_get(stream, timeout, nil, &out)
            guard status == BPS_OK, let got = out else { return (frames, status) }
            XCTAssertEqual(bps_item_is_frame(got), 1)
            frames.append(frameBytes(got))
            bps_frame_free(got)
        }
    }

    private func makePipe() -> (read: Int32, write: Int32) {
        var fds: [Int32] = [-1, -1]
        XCTAssertEqual(pipe(&fds), 0)
        return (fds[0], fds[1])
    }

    private func write(_ fd: Int32, _ text: String) {
        let bytes = Array(text.utf8)
        XCTAssertEqual(Glibc.write(fd, bytes, bytes.count), bytes.count)
    }

    private func isOpen(_ fd: Int32) -> Bool { fcntl(fd, F_GETFD) != -1 }

    func testLineReaderSplitsLinesThenClosesAtEndOfInput() {
        let stream = makeStream(config(capacity: 4))
        let (r, w) = makePipe()
        var reader: OpaquePointer?
        assertStatus(bps_reader_start(stream, r, BPS_FRAMING_LINES, 3, &reader), BPS_OK)
        write(w, "a\nbb\ncccc")  // reads of 3 bytes: lines span reads
        write(w, "dd\n\nlast")
        close(w)
        let (frames, end) = readAll(stream)
        assertStatus(end, BPS_CLOSED)
        XCTAssertEqual(frames.map { String(decoding: $0, as: UTF8.self) },
                       ["a\n", "bb\n", "ccccdd\n", "\n", "last"])
        assertStatus(bps_reader_stop(reader), BPS_OK)
        XCTAssertFalse(isOpen(r), "the reader closed its fd")
    }

    func testChunkReaderDeliversEveryByteInOrderUnderBackpressure() {
        let stream = makeStream(config(capacity: 2))
        let (r, w) = makePipe()
        var reader: OpaquePointer?
        assertStatus(bps_reader_start(stream, r, BPS_FRAMING_CHUNKS, 16, &reader), BPS_OK)
        let payload = (0..<2_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let writer = spawn {
            let fd = w
            var offset = 0
            while offset < payload.count {
                let n = payload[offset...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
                if n <= 0 { break }
                offset += n
            }
            close(fd)
        }
        usleep(100_000)
        XCTAssertLessThanOrEqual(depth(stream), 2, "the reader respects the bound")
        let (frames, end) = readAll(stream)
        assertStatus(end, BPS_CLOSED)
        XCTAssertTrue(writer(20))
        XCTAssertTrue(frames.allSatisfy { (1...16).contains($0.count) })
        XCTAssertEqual(frames.flatMap { $0 }, payload)
        XCTAssertLessThanOrEqual(stats(stream).peak_depth, 2)
        assertStatus(bps_reader_stop(reader), BPS_OK)
    }

    func testReaderStopWakesAReaderOnASilentPipe() {
        let stream = makeStream(config(capacity: 4))
        let (r, w) = makePipe()
        defer { close(w) }
        var reader: OpaquePointer?
        assertStatus(bps_reader_start(stream, r, BPS_FRAMING_LINES, 64, &reader), BPS_OK)
        write(w, "one\n")
        var out: UnsafeMutableRawPointer?
        assertStatus(bps_stream_get(stream, 20_000_000_000, nil, &out), BPS_OK)
        bps_frame_free(out)
        let handle = Handle(raw: reader!)
        let stopped = onThread(timeout: 10) { _ = bps_reader_stop(handle.raw) }
        XCTAssertTrue(stopped, "bps_reader_stop hung on a silent pipe")
        var closed: Int32 = 0
        assertStatus(bps_stream_is_closed(stream, &closed), BPS_OK)
        XCTAssertEqual(closed, 1, "stopping closes the stream")
        XCTAssertFalse(isOpen(r))
    }

    func testReaderStopWakesAReaderBlockedOnAFullStream() {
        let frameRelease: bps_release_fn = { item, _ in bps_frame_free(item) }
        let stream = makeStream(config(capacity: 1, release: frameRelease))
        let (r, w) = makePipe()
        defer { close(w) }
        var reader: OpaquePointer?
        assertStatus(bps_reader_start(stream, r, BPS_FRAMING_LINES, 64, &reader), BPS_OK)
        write(w, "1\n")
        XCTAssertTrue(waitFor { self.depth(stream) == 1 })
        write(w, "2\n")
        XCTAssertTrue(waitFor { self.stats(stream).producer_waits == 1 }, "the reader never blocked")
        let handle = Handle(raw: reader!)
        XCTAssertTrue(onThread(timeout: 10) { _ = bps_reader_stop(handle.raw) }, "stop hung")
        let (frames, end) = readAll(stream, timeout: 0)
        assertStatus(end, BPS_CLOSED)
        XCTAssertEqual(frames, [Array("1\n".utf8)], "what was read stays readable")
    }

    func testReaderReportsAReadErrorThroughTheStream() {
        let stream = makeStream(config(capacity: 4))
        let directory = open("/", O_RDONLY)  // read() on a directory fails with EISDIR
        XCTAssertGreaterThanOrEqual(directory, 0)
        var reader: OpaquePointer?
        assertStatus(bps_reader_start(stream, directory, BPS_FRAMING_CHUNKS, 64, &reader), BPS_OK)
        let (frames, end) = readAll(stream)
        XCTAssertEqual(frames, [])
        assertStatus(end, BPS_FAILED)
        var code: Int32 = 0
        var buffer = [CChar](repeating: 0, count: 128)
        assertStatus(bps_stream_failure(stream, &code, &buffer, 128, nil), BPS_OK)
        XCTAssertEqual(code, EISDIR)
        XCTAssertEqual(cString(buffer), String(cString: strerror(EISDIR)))
        assertStatus(bps_reader_stop(reader), BPS_OK)
    }

    func testReaderStartRejectsBadArgumentsAndStillClosesTheFd() {
        let stream = makeStream(config(capacity: 4))
        var reader: OpaquePointer? = OpaquePointer(bitPattern: 0xBAD0)
        let cases: [(String, (Int32) -> bps_status)] = [
            ("NULL stream", { bps_reader_start(nil, $0, BPS_FRAMING_LINES, 64, &reader) }),
            ("NULL out", { bps_reader_start(stream, $0, BPS_FRAMING_LINES, 64, nil) }),
            ("chunk 0", { bps_reader_start(stream, $0, BPS_FRAMING_LINES, 0, &reader) }),
            ("chunk too big", { bps_reader_start(stream, $0, BPS_FRAMING_CHUNKS, (1 << 30) + 1, &reader) }),
            ("framing 7", { bps_reader_start(stream, $0, bps_framing(rawValue: 7), 64, &reader) }),
        ]
        for (what, start) in cases {
            let (r, w) = makePipe()
            assertStatus(start(r), BPS_INVALID_ARGUMENT, what)
            XCTAssertFalse(isOpen(r), "\(what): the fd is the reader's on every status")
            close(w)
        }
        XCTAssertEqual(reader, OpaquePointer(bitPattern: 0xBAD0))
        assertStatus(bps_reader_start(stream, -1, BPS_FRAMING_LINES, 64, &reader), BPS_INVALID_ARGUMENT)
        assertStatus(bps_reader_stop(nil), BPS_INVALID_ARGUMENT)
    }

    private func readerConfig(_ framing: bps_framing = BPS_FRAMING_LINES, chunk: Int = 64,
                              maxLine: Int = 0) -> bps_reader_config {
        var config = bps_reader_config()
        config.size = MemoryLayout<bps_reader_config>.size
        config.framing = framing
        config.chunk_size = chunk
        config.max_line = maxLine
        return config
    }

    func testReaderMaxLineDefaults() {
        XCTAssertEqual(Int(BPS_READER_MAX_LINE_DEFAULT), 64 << 20)
        XCTAssertEqual(Int(BPS_READER_MAX_LINE_MAX), 1 << 48)
    }

    func testReaderEndsTheStreamWithEMSGSIZEAfterTheLinesBeforeATooLongLine() {
        let stream = makeStream(config(capacity: 16))
        let (r, w) = makePipe()
        defer { close(w) }
        var reader: OpaquePointer?
        var cfg = readerConfig(chunk: 4, maxLine: 8)
        assertStatus(bps_reader_start_ex(stream, r, &cfg, &reader), BPS_OK)
        write(w, "1234567\nab\n123456789")  // 8 bytes with its newline: the limit exactly
        let (frames, end) = readAll(stream)
        XCTAssertEqual(frames.map { String(decoding: $0, as: UTF8.self) }, ["1234567\n", "ab\n"])
        assertStatus(end, BPS_FAILED)
        var code: Int32 = 0
        var buffer = [CChar](repeating: 0, count: 128)
        assertStatus(bps_stream_failure(stream, &code, &buffer, 128, nil), BPS_OK)
        XCTAssertEqual(code, EMSGSIZE)
        XCTAssertTrue(cString(buffer).contains("max_line (8 bytes)"), cString(buffer))
        assertStatus(bps_reader_stop(reader), BPS_OK)
    }

    func testReaderStartExRejectsBadConfigsAndStillClosesTheFd() {
        let stream = makeStream(config(capacity: 4))
        var reader: OpaquePointer? = OpaquePointer(bitPattern: 0xBAD0)
        var small = readerConfig()
        small.size = MemoryLayout<bps_reader_config>.size - 1
        let cases: [(String, bps_reader_config?)] = [
            ("NULL config", nil),
            ("size too small", small),
            ("max_line too big", readerConfig(maxLine: (1 << 48) + 1)),
            ("max_line negative as size_t", readerConfig(maxLine: -1)),
            ("chunk 0", readerConfig(chunk: 0)),
            ("framing 7", readerConfig(bps_framing(rawValue: 7))),
        ]
        for (what, cfg) in cases {
            let (r, w) = makePipe()
            var copy = cfg ?? readerConfig()
            let status = cfg == nil ? bps_reader_start_ex(stream, r, nil, &reader)
                                    : bps_reader_start_ex(stream, r, &copy, &reader)
            assertStatus(status, BPS_INVALID_ARGUMENT, what)
            XCTAssertFalse(isOpen(r), "\(what): the fd is the reader's on every status")
            close(w)
        }
        XCTAssertEqual(reader, OpaquePointer(bitPattern: 0xBAD0))
    }

    func testReaderStopsAtOnceWhileOthersReadTheSamePipe() {
        // Twenty readers of one pipe (dups of one description) and twenty bursts: most
        // readers find the bytes gone when they read. None may be left blocked in a read.
        let (r, w) = makePipe()
        defer { close(w) }
        var streams: [OpaquePointer] = []
        var readers: [OpaquePointer] = []
        for _ in 0..<20 {
            let stream = makeStream(config(capacity: 1024, release: { item, _ in bps_frame_free(item) }))
            var reader: OpaquePointer?
            assertStatus(bps_reader_start(stream, dup(r), BPS_FRAMING_LINES, 64, &reader), BPS_OK)
            streams.append(stream)
            readers.append(reader!)
        }
        let flags = fcntl(r, F_GETFL)
        for _ in 0..<20 { write(w, "x\n") }
        usleep(200_000)
        XCTAssertEqual(fcntl(r, F_GETFL), flags, "the caller's description is unchanged")
        XCTAssertEqual(flags & O_NONBLOCK, 0)
        let handles = readers.map { Handle(raw: $0) }
        let start = now()
        let stopped = onThread(timeout: 10) { for handle in handles { _ = bps_reader_stop(handle.raw) } }
        XCTAssertTrue(stopped, "a reader of a shared pipe could not be stopped")
        XCTAssertLessThan(now() - start, 1.0)
        close(r)
    }

    private func waitFor(_ seconds: Double = 10, _ condition: () -> Bool) -> Bool {
        let deadline = now() + seconds
        while now() < deadline {
            if condition() { return true }
            usleep(1_000)
        }
        return condition()
    }
}

private final class FlagBox: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    func set() { lock.lock(); value = true; lock.unlock() }
    var isSet: Bool { lock.lock(); defer { lock.unlock() }; return value }
}

/// An atomic add on a C word, as a C consumer would do it on the delivery counter.
private func bps_test_atomic_add(_ word: UnsafeMutablePointer<Int>, _ value: Int) {
    UnsafeMutableRawPointer(word).assumingMemoryBound(to: Atomic<Int>.self).pointee
        .add(value, ordering: .releasing)
}

// Test helpers shared by the core suites: a lock-guarded box, a joinable thread with a
// deadline (a hung call fails the test instead of hanging the run), a reference-type item
// that reports its deinit (to prove the stream leaks and double-frees nothing), and a wait
// observer that records every hook call.
//
// Threads are Foundation's `Thread`, in tests only; the core itself never imports Foundation.
import Foundation
import XCTest
@testable import BPStreamCore

/// State shared between test threads, guarded by a lock.
final class Locked<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value

    init(_ value: Value) { self.value = value }

    @discardableResult
    func withLock<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }

    var current: Value { withLock { $0 } }
}

/// A thread the test joins with a deadline.
final class TestThread: @unchecked Sendable {
    private let finished = DispatchSemaphore(value: 0)
    private let joined = Locked(false)

    /// Starts `body` on a new thread at once.
    init(_ name: String = "bpstream-test", _ body: @escaping @Sendable () -> Void) {
        let thread = Thread { [finished] in
            body()
            finished.signal()
        }
        thread.name = name
        thread.start()
    }

    /// Whether the body finished within `seconds` (generous bounds: this is a hang guard).
    func join(timeout seconds: Double = 30) -> Bool {
        if joined.current { return true }
        guard finished.wait(timeout: .now() + seconds) == .success else { return false }
        joined.withLock { $0 = true }
        return true
    }
}

/// Seconds on the monotonic clock.
/// Forks; the child runs `body` and exits with its result (0 ok). Returns the child's exit
/// status, or nil if it did not exit within `seconds` (then it is killed): a hang in the
/// child fails the test instead of hanging the run.
func runInForkedChild(timeout seconds: Double = 10, _ body: () -> Int32) -> Int32? {
    let pid = fork()
    precondition(pid >= 0, "fork failed")
    if pid == 0 { _exit(body()) }
    let deadline = monotonicSeconds() + seconds
    var status: Int32 = 0
    while monotonicSeconds() < deadline {
        if waitpid(pid, &status, WNOHANG) == pid {
            return (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        }
        usleep(1000)
    }
    kill(pid, SIGKILL)
    _ = waitpid(pid, &status, 0)
    return nil
}

func monotonicSeconds() -> Double {
    Double(DispatchTime.now().uptimeNanoseconds) / 1e9
}

/// Polls `condition` until it holds or `seconds` pass; returns whether it held.
func eventually(timeout seconds: Double = 10, _ condition: () -> Bool) -> Bool {
    let deadline = monotonicSeconds() + seconds
    while monotonicSeconds() < deadline {
        if condition() { return true }
        usleep(1_000)
    }
    return condition()
}

/// Counts live `TrackedItem`s and records which ones were deinitialised.
final class DeinitTracker: @unchecked Sendable {
    private let state = Locked((live: 0, destroyed: [Int]()))

    var live: Int { state.current.live }
    var destroyedIDs: [Int] { state.current.destroyed }

    fileprivate func created() { state.withLock { $0.live += 1 } }
    fileprivate func destroyed(_ id: Int) {
        state.withLock {
            $0.live -= 1
            $0.destroyed.append(id)
        }
    }
}

/// A reference-type item: its deinit proves nobody (the stream included) still holds it.
final class TrackedItem: Sendable {
    let id: Int
    let tracker: DeinitTracker

    init(_ id: Int, _ tracker: DeinitTracker) {
        self.id = id
        self.tracker = tracker
        tracker.created()
    }

    deinit { tracker.destroyed(id) }
}

/// Records every `onDrop` call as (id, reason).
final class DropLog<Element>: @unchecked Sendable {
    private let entries = Locked([(Int, DropReason)]())
    private let key: (Element) -> Int

    init(key: @escaping (Element) -> Int) { self.key = key }

    /// The closure to pass as `onDrop`; it keeps no reference to the item.
    var onDrop: (Element, DropReason) -> Void {
        { [entries, key] item, reason in
            let id = key(item)
            entries.withLock { $0.append((id, reason)) }
        }
    }

    var all: [(Int, DropReason)] { entries.current }
    func ids(_ reason: DropReason) -> [Int] { all.filter { $0.1 == reason }.map(\.0) }
    var count: Int { all.count }
}

/// What the hooks of one `RecordingObserver` saw.
final class HookLog: @unchecked Sendable {
    let events = Locked([String]())
    /// Protocol breaches seen by the hooks themselves (nested or unbalanced episodes).
    let violations = Locked([String]())
    private let open = Locked(false)

    func record(_ event: String) {
        events.withLock { $0.append(event) }
        switch event {
        case "willWait":
            if open.withLock({ let was = $0; $0 = true; return was }) {
                violations.withLock { $0.append("willWait inside an open episode") }
            }
        case "didWait":
            if !open.withLock({ let was = $0; $0 = false; return was }) {
                violations.withLock { $0.append("didWait without willWait") }
            }
        case "poll":
            if !open.withLock({ $0 }) {
                violations.withLock { $0.append("poll outside an episode") }
            }
        default: break
        }
    }

    func count(_ event: String) -> Int { events.current.filter { $0 == event }.count }
}

/// A wait observer that logs each hook, runs `probe` inside each one (a probe that touches
/// the stream deadlocks if a hook runs with the stream's lock held), and cancels on the
/// `cancelOnPoll`-th poll (0: never).
struct RecordingObserver: WaitObserver {
    let log: HookLog
    let pollIntervalNanoseconds: Int64
    var cancelOnPoll = 0
    var probe: ((String) -> Void)? = nil
    private var polls = 0

    init(log: HookLog, pollIntervalNanoseconds: Int64 = 0, cancelOnPoll: Int = 0,
         probe: ((String) -> Void)? = nil) {
        self.log = log
        self.pollIntervalNanoseconds = pollIntervalNanoseconds
        self.cancelOnPoll = cancelOnPoll
        self.probe = probe
    }

    mutating func willWait() {
        log.record("willWait")
        probe?("willWait")
    }

    mutating func shouldCancel() -> Bool {
        polls += 1
        log.record("poll")
        probe?("poll")
        return cancelOnPoll > 0 && polls >= cancelOnPoll
    }

    mutating func didWait() {
        log.record("didWait")
        probe?("didWait")
    }
}

/// A deterministic pseudo-random generator (SplitMix64), so failures reproduce.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

func XCTAssertIdentity(
    _ stats: StreamStats, _ message: @autoclosure () -> String = "",
    file: StaticString = #filePath, line: UInt = #line
) {
    XCTAssertEqual(
        stats.produced, stats.consumed + stats.dropped + stats.depth,
        "produced == consumed + dropped + depth \(message()): \(stats)", file: file, line: line)
}

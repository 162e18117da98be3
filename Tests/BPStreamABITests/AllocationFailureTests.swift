// Running out of memory at the ABI: a put whose buffer cannot grow returns BPS_NO_MEMORY,
// leaves its item with the caller and the stream usable. Run in a forked child whose
// address space is capped (RLIMIT_AS) a little above what it uses: the child fills a
// stream of capacity 2^30 until an allocation fails. An abort (what the Swift runtime does
// when a standard collection cannot grow) kills the child, and the parent sees the signal.
// No test-only allocation hook exists in the library: the failure is a real malloc failing.
import CBPStream
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// The child's checks, as exit codes: 0 all held, else the first that failed.
private enum ChildCheck: Int32 {
    case ok = 0, rlimit, create, firstFailureNotNoMemory, grewTooLittle, stats, identity,
         singlePutNotNoMemory, getAfterFailure, putAfterGet, takenWrong
}

/// VmSize of this process, in bytes (0 if unknown).
private func addressSpace() -> Int {
    guard let file = fopen("/proc/self/status", "r") else { return 0 }
    defer { fclose(file) }
    var line = [CChar](repeating: 0, count: 256)
    while fgets(&line, Int32(line.count), file) != nil {
        let text = String(cString: line)
        if text.hasPrefix("VmSize:") {
            let kilobytes = text.dropFirst(7).split(whereSeparator: { $0 == " " || $0 == "\t" }).first.flatMap { Int($0) } ?? 0
            return kilobytes * 1024
        }
    }
    return 0
}

/// Runs in the forked child; returns the exit code. Only C ABI calls, malloc and the
/// stream's own pthread lock (created here): nothing another thread of the parent held.
private func fillUntilAllocationFails() -> ChildCheck {
    let used = addressSpace()
    guard used > 0 else { return .rlimit }
    var limit = rlimit(rlim_cur: rlim_t(used + 256 << 20), rlim_max: rlim_t(used + 256 << 20))
    guard setrlimit(__rlimit_resource_t(RLIMIT_AS.rawValue), &limit) == 0 else { return .rlimit }

    var config = bps_config(size: MemoryLayout<bps_config>.size, capacity: 1 << 30,
                            policy: BPS_POLICY_BLOCK, release: nil, release_context: nil)
    var handle: OpaquePointer?
    guard bps_stream_create(&config, &handle) == BPS_OK, let stream = handle else { return .create }
    let item = UnsafeMutableRawPointer(bitPattern: 0x10)!
    let batch = [UnsafeMutableRawPointer?](repeating: item, count: 4096)
    var stored = 0
    var status = BPS_OK
    var taken = 0
    while status == BPS_OK {
        status = batch.withUnsafeBufferPointer {
            bps_stream_put_many(stream, $0.baseAddress, $0.count, 0, nil, &taken)
        }
        stored += taken
    }
    guard status == BPS_NO_MEMORY else { return .firstFailureNotNoMemory }
    guard stored >= 1 << 20 else { return .grewTooLittle }

    var stats = bps_stats()
    stats.size = MemoryLayout<bps_stats>.size
    guard bps_stream_stats(stream, &stats) == BPS_OK else { return .stats }
    guard stats.produced == UInt64(stored), stats.depth == UInt64(stored),
          stats.produced == stats.consumed + stats.dropped + stats.depth
    else { return .identity }
    // Still full to the brim of what the ring holds: one more needs the growth that failed.
    guard bps_stream_put(stream, item, 0, nil) == BPS_NO_MEMORY else { return .singlePutNotNoMemory }
    var out: UnsafeMutableRawPointer?
    guard bps_stream_get(stream, 0, nil, &out) == BPS_OK, out == item else { return .getAfterFailure }
    guard bps_stream_put(stream, item, 0, nil) == BPS_OK else { return .putAfterGet }
    guard bps_stream_stats(stream, &stats) == BPS_OK,
          stats.produced == UInt64(stored + 1), stats.consumed == 1,
          stats.depth == UInt64(stored), stats.rejected == 0
    else { return .identity }
    guard taken < batch.count else { return .takenWrong }
    _ = bps_stream_release(stream)
    return .ok
}

final class AllocationFailureTests: XCTestCase {
    func testPutThatCannotGrowTheBufferReturnsNoMemory() throws {
        #if !os(Linux)
        throw XCTSkip("RLIMIT_AS and /proc/self/status: Linux only")
        #else
        fflush(nil)
        let pid = fork()
        XCTAssertGreaterThanOrEqual(pid, 0, "fork failed")
        if pid == 0 { _exit(fillUntilAllocationFails().rawValue) }
        var status: Int32 = 0
        var waited = 0
        while waitpid(pid, &status, WNOHANG) == 0 {
            if waited > 120_000 {  // ms: a hang guard, the child takes a few seconds
                kill(pid, SIGKILL)
                _ = waitpid(pid, &status, 0)
                return XCTFail("the child hung")
            }
            usleep(10_000)
            waited += 10
        }
        let signal = status & 0x7f
        XCTAssertEqual(signal, 0, "the child was killed by signal \(signal): an allocation failure aborted")
        guard signal == 0 else { return }
        let code = (status >> 8) & 0xff
        XCTAssertEqual(code, 0, "the child's check \(ChildCheck(rawValue: code).map { "\($0)" } ?? "\(code)") failed")
        #endif
    }
}

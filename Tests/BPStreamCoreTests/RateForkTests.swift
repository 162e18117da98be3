// fork() while threads use a limiter and a manual clock: the child finds both usable
// (their locks were taken around the fork) and the parent's parked waiters forgotten.
import Foundation
import XCTest
@testable import BPStreamCore

final class RateForkTests: XCTestCase {
    func testChildUsesALimiterWhoseLockAnotherThreadHeldAtTheFork() throws {
        let clock = ManualClock()
        let limiter = try Limiter(maxConcurrent: 1, rate: 1e6, burst: 1000, clock: clock)
        XCTAssertTrue(limiter.tryAcquire())
        let parked = TestThread("parked") { _ = limiter.acquire(timeoutNanoseconds: 60_000_000_000) }
        XCTAssertTrue(eventually { limiter.stats().waiting == 1 })
        let stop = Locked(false)
        let hammer = TestThread("hammer") {
            while !stop.current {
                for _ in 0..<100 { _ = limiter.tryAcquire(); _ = limiter.stats(); try? clock.advance(by: 1) }
            }
        }
        for round in 0..<20 {
            let status = runInForkedChild {
                guard limiter.stats().waiting == 0 else { return 2 }  // the parked thread stayed behind
                guard limiter.releaseSlot(), limiter.tryAcquire() else { return 3 }
                guard limiter.acquire(timeoutNanoseconds: 0) == .timedOut else { return 4 }
                do { try clock.advance(by: 1) } catch { return 5 }
                return 0
            }
            XCTAssertEqual(status, 0, "fork \(round): the child hung (nil) or failed")
            if status != 0 { break }
        }
        stop.withLock { $0 = true }
        XCTAssertTrue(hammer.join())
        limiter.releaseSlot()
        XCTAssertTrue(parked.join())
    }
}

// fork() while other threads use a stream: the child must find every stream usable, with
// the items it held at the fork, whatever the parent's threads were doing (ForkRegistry).
// Each child exits with _exit; the parent waits for it with a deadline and kills it on
// timeout, so a hang fails the test instead of hanging the run.
import Foundation
import XCTest
@testable import BPStreamCore

final class ForkTests: XCTestCase {
    /// A thread puts and gets without pause while the test forks 40 times: most forks land
    /// while it is inside the stream's lock. Every child uses the stream at once.
    func testChildUsesAStreamWhoseLockAnotherThreadHeldAtTheFork() throws {
        let stream = try BoundedStream<Int>(capacity: 64, policy: .dropOldest)
        let stop = Locked(false)
        let hammer = TestThread("hammer") {
            var i = 0
            while !stop.current {
                for _ in 0..<100 { try? stream.put(i); i += 1; _ = try? stream.get(timeout: .zero) }
            }
        }
        defer { stop.withLock { $0 = true }; XCTAssertTrue(hammer.join()) }
        for round in 0..<40 {
            let status = runInForkedChild {
                let before = stream.stats()
                guard before.identityHolds else { return 2 }
                do {
                    try stream.put(-1)
                    var drained = 0
                    while (try? stream.get(timeout: .zero)) != nil { drained += 1 }
                    guard drained == Int(before.depth) + 1 || (before.depth == 64 && drained == 64)
                    else { return 3 }
                    stream.close()
                    guard stream.stats().identityHolds else { return 4 }
                } catch { return 5 }
                return 0
            }
            XCTAssertEqual(status, 0, "fork \(round): the child hung (nil) or failed")
            if status != 0 { break }
        }
    }

    /// A thread of the parent parked in get(): in the child nobody waits, and a put and a
    /// get work (the parent's waiter count and condition variable are forgotten).
    func testParentsParkedWaiterIsForgottenInTheChild() throws {
        let stream = try BoundedStream<Int>(capacity: 4, policy: .block)
        let getter = TestThread("getter") { _ = try? stream.get(timeout: .seconds(30)) }
        XCTAssertTrue(eventually { stream.stats().consumerWaits == 1 })
        let status = runInForkedChild {
            do {
                try stream.put(7)
                guard try stream.get(timeout: .seconds(1)) == 7 else { return 2 }
                // A get that must wait times out normally, with no phantom waiter around.
                guard (try? stream.get(timeout: .milliseconds(20))) == nil else { return 3 }
                stream.close()
            } catch { return 4 }
            return 0
        }
        XCTAssertEqual(status, 0)
        stream.close()
        XCTAssertTrue(getter.join())
    }
}

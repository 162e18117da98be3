// RingBuffer on its own: order across the wrap, growth (and growth that fails), the front
// insertion settle uses, the bulk move, and element lifetimes (class elements whose deinit
// is counted: nothing leaks, nothing is released twice).
import XCTest
@testable import BPStreamCore

/// A ring of `capacity` slots whose head sits at `head`, holding `items` from there on
/// (wrapping when they pass the end).
private func ring<T>(capacity: Int, head: Int, _ items: [T]) -> RingBuffer<T> {
    let ring = RingBuffer<T>()
    XCTAssertTrue(ring.reserve(capacity, limit: capacity))
    XCTAssertEqual(ring.capacity, capacity)
    // Walk the head to `head` through appends and pops, then fill.
    for _ in 0..<head { ring.appendAssumingRoom(items[0]); _ = ring.popFirst() }
    for item in items { ring.appendAssumingRoom(item) }
    XCTAssertEqual(ring.head, head)
    return ring
}

final class RingBufferTests: XCTestCase {
    func testFIFOAcrossTheWrap() {
        let r = ring(capacity: 8, head: 5, [1, 2, 3, 4, 5, 6])  // slots 5, 6, 7, 0, 1, 2
        XCTAssertEqual(Array(r), [1, 2, 3, 4, 5, 6])
        XCTAssertEqual(r.count, 6)
        XCTAssertEqual(r.popFirst(), 1)
        XCTAssertEqual(r.popFirst(), 2)
        XCTAssertEqual(r.popFirst(), 3)
        XCTAssertEqual(r.head, 0, "the head wraps to slot 0 after the last slot")
        r.appendAssumingRoom(7)
        XCTAssertEqual(Array(r), [4, 5, 6, 7])
        var popped: [Int] = []
        while let item = r.popFirst() { popped.append(item) }
        XCTAssertEqual(popped, [4, 5, 6, 7])
        XCTAssertTrue(r.isEmpty)
        XCTAssertNil(r.popFirst())
    }

    func testAppendContentsOfWrapsAndTakesSlices() {
        let r = ring(capacity: 8, head: 6, [0])
        let source = [1, 2, 3, 4, 5, 6, 7, 8, 9]
        source.withUnsafeBufferPointer { buffer in
            r.appendAssumingRoom(contentsOf: buffer[1...].prefix(4))  // contiguous: 2 copies
        }
        XCTAssertEqual(Array(r), [0, 2, 3, 4, 5])
        r.appendAssumingRoom(contentsOf: [10, 11, 12].lazy.map { $0 })  // not contiguous
        XCTAssertEqual(Array(r), [0, 2, 3, 4, 5, 10, 11, 12])
        XCTAssertEqual(r.count, r.capacity)
    }

    func testGrowthAcrossTheWrapKeepsOrder() {
        let r = ring(capacity: 8, head: 5, Array(1...8))  // full, wrapped: slots 5...7, 0...4
        XCTAssertTrue(r.reserve(9))
        XCTAssertEqual(r.capacity, 16, "doubles")
        XCTAssertEqual(r.head, 0, "growth unwraps")
        XCTAssertEqual(Array(r), Array(1...8))
        r.appendAssumingRoom(9)
        XCTAssertEqual(Array(r), Array(1...9))
        XCTAssertTrue(r.reserve(40, limit: 20))
        XCTAssertEqual(r.capacity, 40, "at least what is needed, past the limit")
        XCTAssertTrue(r.reserve(41, limit: 50))
        XCTAssertEqual(r.capacity, 50, "doubling stops at the limit")
        XCTAssertTrue(r.reserve(3), "never shrinks")
        XCTAssertEqual(r.capacity, 50)
    }

    func testGrowthThatCannotBeHadFailsAndChangesNothing() {
        let r = ring(capacity: 8, head: 6, [1, 2, 3, 4])
        XCTAssertFalse(r.reserve(1 << 58), "2^61 bytes: malloc says no")
        XCTAssertFalse(r.reserve(Int.max / 2), "the byte count overflows")
        XCTAssertEqual(r.capacity, 8)
        XCTAssertEqual(r.head, 6)
        XCTAssertEqual(Array(r), [1, 2, 3, 4])
        XCTAssertNil(r.takeAll(keepingRoomFor: 1 << 58), "fresh room is allocated first")
        XCTAssertEqual(Array(r), [1, 2, 3, 4], "and nothing was taken")
    }

    func testPrependAcrossTheWrap() {
        let r = ring(capacity: 8, head: 2, [5, 6, 7])
        r.prependAssumingRoom(contentsOf: [1, 2, 3, 4])  // new head: slot 6 (wraps below 0)
        XCTAssertEqual(r.head, 6)
        XCTAssertEqual(Array(r), [1, 2, 3, 4, 5, 6, 7])
        r.prependAssumingRoom(contentsOf: [0])
        XCTAssertEqual(Array(r), Array(0...7))
        XCTAssertEqual(r.popFirst(), 0)
        r.prependAssumingRoom(contentsOf: [])
        XCTAssertEqual(Array(r), Array(1...7))
    }

    func testMoveFirstSpanningTwoSegments() {
        let r = ring(capacity: 8, head: 5, Array(1...7))  // slots 5, 6, 7 | 0, 1, 2, 3
        let target = UnsafeMutableBufferPointer<Int>.allocate(capacity: 10)
        defer { target.deallocate() }
        r.moveFirst(5, to: target)
        XCTAssertEqual(Array(target[..<5]), [1, 2, 3, 4, 5])
        XCTAssertEqual(r.head, 2)
        XCTAssertEqual(Array(r), [6, 7])
        r.moveFirst(2, to: target)
        XCTAssertEqual(Array(target[..<2]), [6, 7])
        XCTAssertTrue(r.isEmpty)
        r.moveFirst(0, to: target)
        XCTAssertTrue(r.isEmpty)
    }

    func testTakeAllHandsOverEverything() {
        let r = ring(capacity: 8, head: 7, [1, 2, 3])
        let taken = r.takeAll()!
        XCTAssertEqual(Array(taken), [1, 2, 3])
        XCTAssertTrue(r.isEmpty)
        XCTAssertEqual(r.capacity, 0, "nothing allocated until it grows again")
        XCTAssertTrue(r.reserve(1))
        r.appendAssumingRoom(4)
        XCTAssertEqual(Array(r), [4])
        let again = r.takeAll(keepingRoomFor: 3, limit: 5)!
        XCTAssertEqual(Array(again), [4])
        XCTAssertEqual(r.capacity, 5, "fresh room: what the old ring had (16), up to 1024 and the limit")
        let limited = ring(capacity: 2000, head: 0, [1]).takeAll(keepingRoomFor: 3, limit: 1500)
        XCTAssertNotNil(limited)
    }

    /// Every operation with class elements: each item is released exactly once, by
    /// whoever owns it last (the ring, a moved-to buffer, the taker of `takeAll`).
    func testElementLifetimes() {
        let tracker = DeinitTracker()
        var nextID = 0
        func item() -> TrackedItem { defer { nextID += 1 }; return TrackedItem(nextID, tracker) }
        do {
            let r = RingBuffer<TrackedItem>()
            XCTAssertTrue(r.reserve(4, limit: 4))
            for _ in 0..<3 { r.appendAssumingRoom(item()) }       // 0, 1, 2
            XCTAssertEqual(r.popFirst()?.id, 0)                    // released here
            XCTAssertEqual(tracker.destroyedIDs, [0])
            for _ in 0..<2 { r.appendAssumingRoom(item()) }       // 3, 4: wraps
            XCTAssertTrue(r.reserve(9))                            // growth moves, releases nothing
            XCTAssertEqual(tracker.live, 4)
            r.appendAssumingRoom(contentsOf: [item(), item()])     // 5, 6
            r.prependAssumingRoom(contentsOf: [item()])            // 7, at the front
            XCTAssertEqual(r.map(\.id), [7, 1, 2, 3, 4, 5, 6])
            XCTAssertEqual(tracker.live, 7, "iteration copies nothing it keeps")

            let target = UnsafeMutableBufferPointer<TrackedItem>.allocate(capacity: 3)
            r.moveFirst(3, to: target)                             // 7, 1, 2 now the target's
            XCTAssertEqual(tracker.live, 7)
            XCTAssertEqual(target.map(\.id), [7, 1, 2])
            _ = target.deinitialize()
            target.deallocate()
            XCTAssertEqual(tracker.live, 4)

            var taken = r.takeAll()                                // 3, 4, 5, 6
            XCTAssertEqual(tracker.live, 4)
            XCTAssertTrue(r.reserve(1))                            // from nothing
            r.appendAssumingRoom(contentsOf: CollectionOfOne(item()))  // 8
            taken = nil                                            // releases 3, 4, 5, 6
            XCTAssertNil(taken)
            XCTAssertEqual(tracker.live, 1)
            for _ in 0..<20 { XCTAssertTrue(r.reserve(r.count + 1)); r.appendAssumingRoom(item()) }
            for _ in 0..<15 { _ = r.popFirst() }
            for _ in 0..<10 { XCTAssertTrue(r.reserve(r.count + 1)); r.appendAssumingRoom(item()) }
            XCTAssertEqual(tracker.live, 16)
        }  // the ring's deinit releases what it still holds, across its wrap
        XCTAssertEqual(tracker.live, 0, "nothing leaked")
        XCTAssertEqual(tracker.destroyedIDs.sorted(), Array(0..<nextID), "each released once")
    }
}

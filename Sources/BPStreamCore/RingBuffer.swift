#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A FIFO ring over `malloc`'d storage whose growth can fail: when the memory for a bigger
/// ring cannot be had, `reserve` says so and nothing changes, where a standard collection
/// (Array, swift-collections' Deque) would trap and abort the whole process. The stream's
/// bound may be up to 2^30 items and the ring grows on demand, so running out of memory
/// is an outcome a put reports (`PutOutcome.noMemory`), not a crash.
///
/// Layout: `capacity` slots at `storage`; the `count` items live in slots `head`,
/// `head + 1`, ... wrapping past the end to slot 0. Slots outside that range are
/// uninitialized. `storage` is nil exactly when `capacity` is 0 (nothing allocated yet).
///
/// Growth doubles (at least to what is needed, at most to the `limit` the caller gives,
/// the stream's bound), into a fresh block: the items are MOVED (bitwise, no retain or
/// release) in at most two copies, unwrapped, and the old block freed. The ring never
/// shrinks on its own: a stream that once held many items keeps their slots (8 bytes
/// each for the ABI's pointers) until it is dropped or its backlog is cleared as a whole
/// (`takeAll`: `dropAll`, an immediate close), which hands the whole block over and starts
/// again small. Shrinking on drain was left out: it would put a free and a malloc (that
/// may fail) on a path that cannot report failure (a get), and a stream's bound already
/// says how much memory its user accepts.
///
/// A class, not a copy-on-write value: exactly one owner (the state machine) holds it,
/// and the hot path pays no uniqueness check. Not thread-safe: the stream's lock guards it.
@usableFromInline
final class RingBuffer<Element> {
    @usableFromInline var storage: UnsafeMutablePointer<Element>?
    @usableFromInline var capacity = 0
    /// The slot of the oldest item (meaningless while empty).
    @usableFromInline var head = 0
    @usableFromInline var count = 0

    @inlinable
    init() {}

    deinit {
        guard let storage else { return }
        let (first, second) = segments(count)
        storage.advanced(by: first.lowerBound).deinitialize(count: first.count)
        storage.deinitialize(count: second)
        free(storage)
    }

    @inlinable
    var isEmpty: Bool { count == 0 }

    /// The slot `offset` places after the head (`offset <= capacity`).
    @inlinable @inline(__always)
    func slot(_ offset: Int) -> Int {
        let index = head &+ offset
        return index >= capacity ? index &- capacity : index
    }

    /// The slots of the first `n` items (`n <= count`): a range from the head, and how
    /// many more from slot 0 (the part that wrapped).
    @inlinable @inline(__always)
    func segments(_ n: Int) -> (first: Range<Int>, second: Int) {
        let firstCount = Swift.min(n, capacity &- head)
        return (head..<(head &+ firstCount), n &- firstCount)
    }

    // MARK: growth

    /// Makes room for at least `minimumCapacity` items; returns false (and changes nothing)
    /// when the memory cannot be had. Grows to twice the capacity, at least
    /// `minimumCapacity`, and at most `limit` unless more is needed.
    @inlinable
    func reserve(_ minimumCapacity: Int, limit: Int = Int.max) -> Bool {
        if minimumCapacity <= capacity { return true }
        return grow(to: minimumCapacity, limit: limit)
    }

    @usableFromInline
    func grow(to minimumCapacity: Int, limit: Int) -> Bool {
        let doubled = capacity > Int.max / 2 ? Int.max : Swift.max(2 * capacity, 16)
        let newCapacity = Swift.max(minimumCapacity, Swift.min(doubled, limit))
        // No retry with just what is needed when doubling fails: near the limit that would
        // grow (and copy everything) by one batch at a time, quadratic in the depth.
        guard let raw = allocate(newCapacity) else { return false }
        let newStorage = raw.bindMemory(to: Element.self, capacity: newCapacity)
        if let storage {
            let (first, second) = segments(count)
            newStorage.moveInitialize(from: storage + first.lowerBound, count: first.count)
            (newStorage + first.count).moveInitialize(from: storage, count: second)
            free(storage)
        }
        storage = newStorage
        capacity = newCapacity
        head = 0
        return true
    }

    /// Memory for `capacity` elements from malloc, or nil.
    @usableFromInline
    func allocate(_ capacity: Int) -> UnsafeMutableRawPointer? {
        let (bytes, overflow) = capacity.multipliedReportingOverflow(by: MemoryLayout<Element>.stride)
        guard !overflow else { return nil }
        // malloc's alignment (16 on 64-bit glibc) suits every element the stream stores.
        assert(MemoryLayout<Element>.alignment <= 16)
        return malloc(Swift.max(bytes, 1))
    }

    // MARK: adding

    /// Appends `item`; the caller has made room (`reserve(count + 1)`).
    @inlinable @inline(__always)
    func appendAssumingRoom(_ item: Element) {
        assert(count < capacity)
        (storage.unsafelyUnwrapped + slot(count)).initialize(to: item)
        count &+= 1
    }

    /// Appends `items` in order; the caller has made room (`reserve(count + items.count)`).
    /// One copy per contiguous run when `items` has contiguous storage.
    @inlinable
    func appendAssumingRoom<Items: Collection>(contentsOf items: Items)
    where Items.Element == Element {
        let n = items.count
        assert(count &+ n <= capacity)
        guard n > 0 else { return }
        let storage = storage.unsafelyUnwrapped
        let start = slot(count)
        let firstCount = Swift.min(n, capacity &- start)
        let copied: Void? = items.withContiguousStorageIfAvailable { source in
            (storage + start).initialize(from: source.baseAddress!, count: firstCount)
            storage.initialize(from: source.baseAddress! + firstCount, count: n &- firstCount)
        }
        if copied == nil {
            var index = start
            for item in items {
                (storage + index).initialize(to: item)
                index &+= 1
                if index == capacity { index = 0 }
            }
        }
        count &+= n
    }

    /// Puts `items` (oldest first) in FRONT of the oldest item, in order; the caller has
    /// made room (`reserve(count + items.count)`).
    @inlinable
    func prependAssumingRoom(contentsOf items: [Element]) {
        let n = items.count
        assert(count &+ n <= capacity)
        guard n > 0 else { return }
        let storage = storage.unsafelyUnwrapped
        // The new head, n slots before the old one, wrapping below slot 0.
        let newHead = head >= n ? head &- n : head &- n &+ capacity
        items.withUnsafeBufferPointer { source in
            let firstCount = Swift.min(n, capacity &- newHead)
            (storage + newHead).initialize(from: source.baseAddress!, count: firstCount)
            storage.initialize(from: source.baseAddress! + firstCount, count: n &- firstCount)
        }
        head = newHead
        count &+= n
    }

    // MARK: removing

    /// Removes and returns the oldest item, or nil when empty.
    @inlinable @inline(__always)
    func popFirst() -> Element? {
        guard count > 0 else { return nil }
        let item = (storage.unsafelyUnwrapped + head).move()
        head &+= 1
        if head == capacity { head = 0 }
        count &-= 1
        return item
    }

    /// Moves the first `n` items (`n <= count`, `n <= target.count`) into `target[0..<n]`,
    /// in order: one bitwise copy per contiguous segment, then a head move.
    @inlinable
    func moveFirst(_ n: Int, to target: UnsafeMutableBufferPointer<Element>) {
        precondition(n <= count && n <= target.count)
        guard n > 0 else { return }
        let storage = storage.unsafelyUnwrapped
        let (first, second) = segments(n)
        let destination = target.baseAddress!
        destination.moveInitialize(from: storage + first.lowerBound, count: first.count)
        (destination + first.count).moveInitialize(from: storage, count: second)
        head = slot(n)
        count &-= n
    }

    /// Hands over every item at once (the returned ring owns them and their storage: it
    /// releases them when dropped, outside the stream's lock) and leaves this ring empty:
    /// O(1), the items are not touched. With `minimumCapacity > 0` this ring gets fresh
    /// storage for that many items (and up to 1024, at most `limit`), allocated FIRST: nil
    /// when it cannot be had, and then nothing changed. With 0 it is left with nothing
    /// allocated (it grows again on demand).
    @inlinable
    func takeAll(keepingRoomFor minimumCapacity: Int = 0, limit: Int = Int.max)
        -> RingBuffer<Element>?
    {
        let taken = RingBuffer()
        if minimumCapacity > 0 {
            let fresh = Swift.max(minimumCapacity, Swift.min(capacity, 1024, limit))
            guard taken.reserve(fresh, limit: fresh) else { return nil }
        }
        swap(&taken.storage, &storage)
        swap(&taken.capacity, &capacity)
        swap(&taken.head, &head)
        swap(&taken.count, &count)
        return taken
    }
}

extension RingBuffer: Sequence {
    /// Iterates oldest first without removing anything (the ring must not change meanwhile).
    @usableFromInline
    struct Iterator: IteratorProtocol {
        @usableFromInline let ring: RingBuffer
        @usableFromInline var offset = 0

        @inlinable
        init(ring: RingBuffer) { self.ring = ring }

        @inlinable
        mutating func next() -> Element? {
            guard offset < ring.count else { return nil }
            defer { offset &+= 1 }
            return ring.storage.unsafelyUnwrapped[ring.slot(offset)]
        }
    }

    @inlinable
    func makeIterator() -> Iterator { Iterator(ring: self) }

    @inlinable
    var underestimatedCount: Int { count }
}

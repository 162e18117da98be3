#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Synchronization

/// Byte frames as the C ABI defines them (`bps_frame` in bpstream.h), handed around as a
/// pointer to `[length: Int][bytes...]` with its lowest bit set (`BPS_ITEM_FRAME_TAG`).
///
/// Memory layout. Every frame has a hidden word just before it, its OWNER:
/// - `nil`: a standalone frame, one malloc'd block `[owner = nil][length][bytes]`;
/// - otherwise: a SLAB, one malloc'd block holding a batch of frames
///   `[refcount][owner|length|bytes (padded to 8)]...`, freed when its last frame is.
/// A batch put (`bps_stream_put_frames`, the fd readers) makes one slab, so a producer
/// pays one malloc and the consumer one free per batch instead of per frame: with the two
/// on different threads, per-frame malloc/free dominated the cost of a frame.
/// Frames are independent items either way: each is freed (exactly once) on its own.
enum Frame {
    static let tag: UInt = 1
    private static let word = MemoryLayout<Int>.size

    /// Bytes one frame takes inside a slab: owner, length, data, padded to a word.
    private static func footprint(_ length: Int) -> Int {
        2 * word + (length + word - 1) / word * word
    }

    /// The longest frame (2^48 bytes): far beyond any allocation, and small enough that
    /// no size computed from frame lengths can overflow.
    static let maximumLength = 1 << 48

    /// A new standalone frame item holding a copy of `data[0..<length]`; nil if malloc failed
    /// (or `length` is beyond `maximumLength`: callers reject that first).
    static func make(copying data: UnsafeRawPointer?, length: Int) -> UnsafeMutableRawPointer? {
        guard length <= maximumLength, let block = malloc(2 * word + Swift.max(length, 1))
        else { return nil }
        block.storeBytes(of: nil, as: UnsafeMutableRawPointer?.self)
        return fill(block + word, copying: data, length: length)
    }

    /// Frame items for `ranges` (data, length), all in one slab, handed to `sink` in order;
    /// false (and nothing handed over) if malloc failed.
    static func make<Ranges: Collection>(
        copying ranges: Ranges, _ sink: (UnsafeMutableRawPointer) -> Void
    ) -> Bool where Ranges.Element == (UnsafeRawPointer?, Int) {
        guard ranges.count > 1 else {
            guard let (data, length) = ranges.first else { return true }
            guard let item = make(copying: data, length: length) else { return false }
            sink(item)
            return true
        }
        var size = word  // the refcount
        for (_, length) in ranges {
            guard length <= maximumLength else { return false }
            let (sum, overflow) = size.addingReportingOverflow(footprint(length))
            guard !overflow else { return false }
            size = sum
        }
        guard let slab = malloc(size) else { return false }
        slab.assumingMemoryBound(to: Atomic<Int>.self).initialize(to: Atomic(ranges.count))
        var cursor = slab + word
        for (data, length) in ranges {
            cursor.storeBytes(of: slab, as: UnsafeMutableRawPointer?.self)
            sink(fill(cursor + word, copying: data, length: length))
            cursor += footprint(length)
        }
        return true
    }

    private static func fill(
        _ frame: UnsafeMutableRawPointer, copying data: UnsafeRawPointer?, length: Int
    ) -> UnsafeMutableRawPointer {
        frame.storeBytes(of: length, as: Int.self)
        if length > 0, let data { (frame + word).copyMemory(from: data, byteCount: length) }
        return UnsafeMutableRawPointer(bitPattern: UInt(bitPattern: frame) | tag)!
    }

    /// Frees a frame item (its slab with its last frame); ignores nil and untagged items.
    static func free(_ item: UnsafeMutableRawPointer?) {
        guard let (ownerSlot, slab) = owner(of: item) else { return }
        guard let slab else {
            Glibc.free(ownerSlot)
            return
        }
        release(slab, frames: 1)
    }

    /// Frees every frame item among `items` (others, and nil, are skipped), like `free` on
    /// each, but with one atomic operation per run of frames from the same slab: a
    /// consumer that frees a batch at once pays per slab, not per frame.
    static func freeAll(_ items: UnsafeBufferPointer<UnsafeMutableRawPointer?>) {
        var run: UnsafeMutableRawPointer? = nil  // the slab of the current run
        var runLength = 0
        for item in items {
            guard let (ownerSlot, slab) = owner(of: item) else { continue }
            guard let slab else {
                Glibc.free(ownerSlot)
                continue
            }
            if slab == run {
                runLength += 1
                continue
            }
            if let run { release(run, frames: runLength) }
            run = slab
            runLength = 1
        }
        if let run { release(run, frames: runLength) }
    }

    /// A frame item's owner slot, and the slab it names (nil: a standalone frame); nil for
    /// nil and untagged items.
    @inline(__always)
    private static func owner(of item: UnsafeMutableRawPointer?)
        -> (ownerSlot: UnsafeMutableRawPointer, slab: UnsafeMutableRawPointer?)?
    {
        guard let item, UInt(bitPattern: item) & tag != 0,
              let frame = UnsafeMutableRawPointer(bitPattern: UInt(bitPattern: item) & ~tag)
        else { return nil }
        let ownerSlot = frame - word
        return (ownerSlot, ownerSlot.load(as: UnsafeMutableRawPointer?.self))
    }

    /// Drops `frames` of the slab's references; frees it with the last.
    @inline(__always)
    private static func release(_ slab: UnsafeMutableRawPointer, frames: Int) {
        let refcount = slab.assumingMemoryBound(to: Atomic<Int>.self)
        if refcount.pointee.subtract(frames, ordering: .acquiringAndReleasing).newValue == 0 {
            refcount.deinitialize(count: 1)
            Glibc.free(slab)
        }
    }
}

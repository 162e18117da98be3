#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CBPStream
import Synchronization

/// Byte frames as the C ABI defines them (`bps_frame` in bpstream.h), handed around as a
/// pointer to `[length: Int][bytes...]` with its lowest bit set (`BPS_ITEM_FRAME_TAG`).
///
/// Memory layout. Every frame has a hidden word just before it, its OWNER:
/// - `nil`: a standalone frame, one malloc'd block `[owner = nil][length][bytes]`;
/// - otherwise: a SLAB, one malloc'd block holding a batch of frames
///   `[refcount][owner|length|bytes (padded to 8)]...`, freed when its last frame is.
/// A batch put (`bps_stream_put_frames`, the fd readers) puts its SMALL frames (at most
/// `BPS_FRAME_SHARED_MAX` bytes) in one slab, so a producer pays one malloc and the consumer
/// one free per batch instead of per frame: with the two on different threads, per-frame
/// malloc/free dominated the cost of a small frame. Larger frames are standalone, so a
/// slab never holds more than batch x (`BPS_FRAME_SHARED_MAX` + 16) bytes, and a consumer
/// that keeps a few small frames a while (bpstream's read-ahead frees them per batch)
/// never keeps a large one's memory with them.
/// Frames are independent items either way: each is freed (exactly once) on its own.
enum Frame {
    static let tag: UInt = 1
    private static let word = MemoryLayout<Int>.size

    /// The largest frame that shares a slab (bpstream.h: `BPS_FRAME_SHARED_MAX`).
    static let sharedMaximum = Int(BPS_FRAME_SHARED_MAX)

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

    /// Bytes before the data in a standalone frame's block: owner and length.
    static let standaloneHeader = 2 * word

    /// Makes a standalone frame item of a malloc'd `block` whose data (`length` bytes, at
    /// most `maximumLength`) the caller wrote at `block + standaloneHeader`: no copy. The
    /// block is the frame's from here on (freed with it).
    static func adopt(_ block: UnsafeMutableRawPointer, length: Int) -> UnsafeMutableRawPointer {
        block.storeBytes(of: nil, as: UnsafeMutableRawPointer?.self)
        return fill(block + word, copying: nil, length: length)
    }

    /// Frame items for `ranges` (data, length), handed to `sink` in order: the small ones
    /// in one slab, the others standalone. False (and nothing handed over) if a length is
    /// beyond `maximumLength` or malloc failed.
    static func make<Ranges: Collection>(
        copying ranges: Ranges, _ sink: (UnsafeMutableRawPointer) -> Void
    ) -> Bool where Ranges.Element == (UnsafeRawPointer?, Int) {
        // The slab's size, for the small frames; and whether any frame is large.
        var size = word  // the refcount
        var shared = 0
        for (_, length) in ranges {
            guard length <= maximumLength else { return false }
            guard length <= sharedMaximum else { continue }
            shared += 1
            size += footprint(length)  // at most count x (sharedMaximum + 16): no overflow
        }
        let slab = shared > 1 ? malloc(size) : nil
        if shared > 1 && slab == nil { return false }
        let inSlab = { (length: Int) in slab != nil && length <= sharedMaximum }
        // Standalone frames next, before anything is handed over, so a failed malloc can
        // still undo everything. Their list is malloc'd too (only when there are any): a
        // native producer's allocation failure must be a status, never a Swift trap.
        let large = ranges.count - (slab == nil ? 0 : shared)
        let standalone = large == 0 ? nil
            : malloc(large * word)?.bindMemory(to: UnsafeMutableRawPointer.self, capacity: large)
        if large > 0 && standalone == nil {
            Glibc.free(slab)
            return false
        }
        defer { Glibc.free(standalone) }
        var made = 0
        for (data, length) in ranges where !inSlab(length) {
            guard let item = make(copying: data, length: length) else {
                for item in UnsafeBufferPointer(start: standalone, count: made) { free(item) }
                Glibc.free(slab)
                return false
            }
            standalone![made] = item
            made += 1
        }
        if let slab {
            slab.assumingMemoryBound(to: Atomic<Int>.self).initialize(to: Atomic(shared))
        }
        var cursor = slab.map { $0 + word }  // the next frame's place in the slab
        var next = 0
        for (data, length) in ranges {
            if inSlab(length), let slab, let place = cursor {
                place.storeBytes(of: slab, as: UnsafeMutableRawPointer?.self)
                sink(fill(place + word, copying: data, length: length))
                cursor = place + footprint(length)
            } else {
                sink(standalone![next])
                next += 1
            }
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

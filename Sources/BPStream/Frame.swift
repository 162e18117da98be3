#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Byte frames as the C ABI defines them (`bps_frame` in bpstream.h): one malloc'd block,
/// `[length: Int][bytes...]`, handed around as a pointer with its lowest bit set
/// (`BPS_ITEM_FRAME_TAG`) so consumers can tell frames from their own items.
enum Frame {
    static let tag: UInt = 1

    /// A new frame item holding a copy of `data[0..<length]`; nil if malloc failed.
    static func make(copying data: UnsafeRawPointer?, length: Int) -> UnsafeMutableRawPointer? {
        guard let block = malloc(MemoryLayout<Int>.size + Swift.max(length, 1)) else { return nil }
        block.storeBytes(of: length, as: Int.self)
        if length > 0, let data {
            (block + MemoryLayout<Int>.size).copyMemory(from: data, byteCount: length)
        }
        return UnsafeMutableRawPointer(bitPattern: UInt(bitPattern: block) | tag)
    }

    /// Frees a frame item; ignores nil and items without the frame tag.
    static func free(_ item: UnsafeMutableRawPointer?) {
        guard let item, UInt(bitPattern: item) & tag != 0 else { return }
        Glibc.free(UnsafeMutableRawPointer(bitPattern: UInt(bitPattern: item) & ~tag))
    }
}

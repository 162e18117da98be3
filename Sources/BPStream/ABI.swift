// The C ABI: @_cdecl thunks, nothing else. Each one checks its arguments, turns C types
// into core calls, and turns the outcome into a bps_status. None traps on a caller's error
// (NULL handle, NULL out-parameter, bad enum or size) and no Swift error escapes: every
// failure becomes a status. The contract is stated in Sources/CBPStream/include/bpstream.h.
//
// Handles: a bps_stream* is an Unmanaged<ItemStream>. bps_stream_create returns it +1,
// retain/release move the count, and calls borrow it with _withUnsafeGuaranteedRef (no
// retain/release traffic on the hot path; the caller's reference keeps it alive).
import BPStreamCore
import CBPStream
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Items cross the ABI as non-NULL opaque pointers.
typealias ItemStream = BoundedStream<UnsafeMutableRawPointer>

@inline(__always)
func withStream(_ handle: OpaquePointer?, _ body: (ItemStream) -> bps_status) -> bps_status {
    guard let handle else { return BPS_INVALID_ARGUMENT }
    return Unmanaged<ItemStream>.fromOpaque(UnsafeRawPointer(handle))._withUnsafeGuaranteedRef(body)
}

/// The caller's optional bps_waiter as a core WaitObserver. A NULL waiter (or hook) is a
/// no-op observer.
struct CWaitObserver: WaitObserver {
    let hook: bps_wait_hook?
    let context: UnsafeMutableRawPointer?
    let pollIntervalNanoseconds: Int64

    /// nil when `waiter` is too small to be a bps_waiter (a caller error).
    @inline(__always)
    init?(_ waiter: UnsafePointer<bps_waiter>?) {
        guard let waiter else {
            (hook, context, pollIntervalNanoseconds) = (nil, nil, 0)
            return
        }
        guard waiter.pointee.size >= MemoryLayout<bps_waiter>.size else { return nil }
        hook = waiter.pointee.hook
        context = waiter.pointee.context
        pollIntervalNanoseconds = hook == nil ? 0 : waiter.pointee.poll_interval_ns
    }

    func willWait() { _ = hook?(context, BPS_WAIT_BEGIN) }
    func shouldCancel() -> Bool { (hook?(context, BPS_WAIT_POLL) ?? 0) != 0 }
    func didWait() { _ = hook?(context, BPS_WAIT_END) }
}

/// A put's outcome as the ABI's status (also used by AsyncWaitABI.swift).
func status(_ outcome: PutOutcome) -> bps_status {
    switch outcome {
    case .stored: return BPS_OK
    case .shed: return BPS_SHED
    case .full: return BPS_FULL
    case .closed: return BPS_CLOSED
    case .cancelled: return BPS_CANCELLED
    case .noMemory: return BPS_NO_MEMORY
    }
}

private func status(_ failure: GetFailure) -> bps_status {
    switch failure {
    case .empty: return BPS_EMPTY
    case .closed: return BPS_CLOSED
    case .cancelled: return BPS_CANCELLED
    case .failed: return BPS_FAILED
    }
}

/// A C capacity (BPS_CAPACITY_UNBOUNDED or 1...BPS_CAPACITY_MAX) as the core's `Int?`;
/// `.none` when out of range.
private func coreCapacity(_ capacity: Int64) -> Int?? {
    if capacity == -1 { return .some(nil) }  // BPS_CAPACITY_UNBOUNDED
    guard capacity >= 1, capacity <= Int64(StreamLimits.maximumCapacity) else { return .none }
    return .some(Int(capacity))
}

@_cdecl("bps_abi_version")
public func abiVersion() -> UInt32 {
    3  // BPS_ABI_VERSION
}

@_cdecl("bps_status_string")
public func abiStatusString(_ status: bps_status) -> UnsafePointer<CChar> {
    let text: StaticString
    switch status {
    case BPS_OK: text = "ok"
    case BPS_SHED: text = "shed: the put was accepted but the item was shed (drop_newest)"
    case BPS_FULL: text = "full: no room in the stream"
    case BPS_EMPTY: text = "empty: no item arrived before the timeout"
    case BPS_CLOSED: text = "closed: the stream is closed"
    case BPS_CANCELLED: text = "cancelled: the wait hook cancelled the call"
    case BPS_TIMED_OUT: text = "timed out: tasks remained unfinished"
    case BPS_INVALID_ARGUMENT: text = "invalid argument"
    case BPS_INVALID_STATE: text = "invalid state: task_done called too many times"
    case BPS_NO_MEMORY: text = "out of memory"
    case BPS_FAILED: text = "failed: the producer closed the stream with an error"
    case BPS_OS_ERROR: text = "an operating system call failed"
    default: text = "unknown status"
    }
    return UnsafeRawPointer(text.utf8Start).assumingMemoryBound(to: CChar.self)
}

@_cdecl("bps_stream_create")
public func abiStreamCreate(
    _ config: UnsafePointer<bps_config>?, _ outStream: UnsafeMutablePointer<OpaquePointer?>?
) -> bps_status {
    // Exactly the size before the flow-control fields (an older caller's struct), or at
    // least the whole struct; a size between the two is a torn struct and refused.
    guard let config, let outStream,
          config.pointee.size == configSizeBeforeFlow || config.pointee.size >= MemoryLayout<bps_config>.size,
          case .some(let capacity) = coreCapacity(config.pointee.capacity),
          config.pointee.policy.rawValue <= BPS_POLICY_ADAPTIVE.rawValue
    else { return BPS_INVALID_ARGUMENT }
    let adaptive = config.pointee.policy == BPS_POLICY_ADAPTIVE
    let policy = adaptive
        ? OverflowPolicy.block : OverflowPolicy(rawValue: UInt8(truncatingIfNeeded: config.pointee.policy.rawValue))!
    var onDrop: ((UnsafeMutableRawPointer, DropReason) -> Void)? = nil
    if let release = config.pointee.release {
        let context = config.pointee.release_context
        onDrop = { item, _ in release(item, context) }
    }
    do {
        var flow: FlowControl? = nil
        var rate: (any RateController)? = nil
        var clock: any ControlClock = SystemClock.shared
        if config.pointee.size >= MemoryLayout<bps_config>.size {
            let c = config.pointee
            guard c.flow <= 1 else { return BPS_INVALID_ARGUMENT }
            if c.flow == 1 {
                flow = try FlowControl(throttleAt: c.throttle_at, pauseAt: c.pause_at, minDelay: c.min_delay,
                                       maxDelay: c.max_delay, hysteresis: c.hysteresis)
            }
            rate = c.rate.map(rateController)
            if let handle = c.clock { clock = controlClock(handle) }
        }
        if adaptive && rate == nil { rate = try defaultAdaptiveRate() }
        let stream = try ItemStream(capacity: capacity, policy: policy, flow: flow, rate: rate,
                                    adaptive: adaptive, clock: clock, onDrop: onDrop)
        outStream.pointee = OpaquePointer(Unmanaged.passRetained(stream).toOpaque())
        return BPS_OK
    } catch {
        return BPS_INVALID_ARGUMENT
    }
}

@_cdecl("bps_stream_retain")
public func abiStreamRetain(_ stream: OpaquePointer?) -> bps_status {
    guard let stream else { return BPS_INVALID_ARGUMENT }
    _ = Unmanaged<ItemStream>.fromOpaque(UnsafeRawPointer(stream)).retain()
    return BPS_OK
}

@_cdecl("bps_stream_release")
public func abiStreamRelease(_ stream: OpaquePointer?) -> bps_status {
    guard let stream else { return BPS_INVALID_ARGUMENT }
    Unmanaged<ItemStream>.fromOpaque(UnsafeRawPointer(stream)).release()
    return BPS_OK
}

@_cdecl("bps_stream_put")
public func abiStreamPut(
    _ stream: OpaquePointer?, _ item: UnsafeMutableRawPointer?, _ timeoutNanoseconds: Int64,
    _ waiter: UnsafePointer<bps_waiter>?
) -> bps_status {
    withStream(stream) { stream in
        guard let item, var observer = CWaitObserver(waiter) else { return BPS_INVALID_ARGUMENT }
        return status(stream.put(item, timeoutNanoseconds: timeoutNanoseconds, observer: &observer))
    }
}

@_cdecl("bps_stream_put_many")
public func abiStreamPutMany(
    _ stream: OpaquePointer?, _ items: UnsafePointer<UnsafeMutableRawPointer?>?, _ count: Int,
    _ timeoutNanoseconds: Int64, _ waiter: UnsafePointer<bps_waiter>?,
    _ outTaken: UnsafeMutablePointer<Int>?
) -> bps_status {
    outTaken?.pointee = 0
    return withStream(stream) { stream in
        guard count >= 0, count == 0 || items != nil, var observer = CWaitObserver(waiter)
        else { return BPS_INVALID_ARGUMENT }
        guard count > 0, let items else { return BPS_OK }
        let optionals = UnsafeBufferPointer(start: items, count: count)
        if optionals.contains(where: { $0 == nil }) { return BPS_INVALID_ARGUMENT }
        // Optional<pointer> and pointer share one layout; no NULL is left (checked above).
        let pointers = UnsafeBufferPointer(
            start: UnsafeRawPointer(items).assumingMemoryBound(to: UnsafeMutableRawPointer.self),
            count: count)
        let (taken, outcome) = stream.put(
            contentsOf: pointers, timeoutNanoseconds: timeoutNanoseconds, observer: &observer)
        outTaken?.pointee = taken
        return status(outcome)
    }
}

@_cdecl("bps_stream_get")
public func abiStreamGet(
    _ stream: OpaquePointer?, _ timeoutNanoseconds: Int64, _ waiter: UnsafePointer<bps_waiter>?,
    _ outItem: UnsafeMutablePointer<UnsafeMutableRawPointer?>?
) -> bps_status {
    withStream(stream) { stream in
        guard let outItem, var observer = CWaitObserver(waiter) else { return BPS_INVALID_ARGUMENT }
        switch stream.get(timeoutNanoseconds: timeoutNanoseconds, observer: &observer) {
        case .success(let item):
            outItem.pointee = item
            return BPS_OK
        case .failure(let failure):
            return status(failure)
        }
    }
}

@_cdecl("bps_stream_get_many")
public func abiStreamGetMany(
    _ stream: OpaquePointer?, _ outItems: UnsafeMutablePointer<UnsafeMutableRawPointer?>?,
    _ maxItems: Int, _ timeoutNanoseconds: Int64, _ waiter: UnsafePointer<bps_waiter>?,
    _ outCount: UnsafeMutablePointer<Int>?
) -> bps_status {
    getMany(stream, outItems, maxItems, timeoutNanoseconds, waiter, outCount, reserving: false)
}

/// bps_stream_get_many and bps_stream_reserve: the same call but for `reserving`.
@inline(__always)
private func getMany(
    _ stream: OpaquePointer?, _ outItems: UnsafeMutablePointer<UnsafeMutableRawPointer?>?,
    _ maxItems: Int, _ timeoutNanoseconds: Int64, _ waiter: UnsafePointer<bps_waiter>?,
    _ outCount: UnsafeMutablePointer<Int>?, reserving: Bool
) -> bps_status {
    withStream(stream) { stream in
        guard let outItems, let outCount, maxItems >= 1, var observer = CWaitObserver(waiter)
        else { return BPS_INVALID_ARGUMENT }
        let buffer = UnsafeMutableBufferPointer(
            start: UnsafeMutableRawPointer(outItems).assumingMemoryBound(to: UnsafeMutableRawPointer.self),
            count: maxItems)
        switch stream.get(into: buffer, reserving: reserving, timeoutNanoseconds: timeoutNanoseconds,
                          observer: &observer) {
        case .success(let count):
            outCount.pointee = count
            return BPS_OK
        case .failure(let failure):
            return status(failure)
        }
    }
}

@_cdecl("bps_stream_close")
public func abiStreamClose(_ stream: OpaquePointer?, _ flags: UInt32) -> bps_status {
    withStream(stream) { stream in
        guard flags & ~UInt32(1) == 0 else { return BPS_INVALID_ARGUMENT }  // BPS_CLOSE_IMMEDIATE
        stream.close(immediate: flags & 1 != 0)
        return BPS_OK
    }
}

@_cdecl("bps_stream_task_done")
public func abiStreamTaskDone(_ stream: OpaquePointer?, _ count: UInt64) -> bps_status {
    withStream(stream) { stream in
        stream.taskDone(count: count) ? BPS_OK : BPS_INVALID_STATE
    }
}

@_cdecl("bps_stream_join")
public func abiStreamJoin(
    _ stream: OpaquePointer?, _ timeoutNanoseconds: Int64, _ waiter: UnsafePointer<bps_waiter>?
) -> bps_status {
    withStream(stream) { stream in
        guard var observer = CWaitObserver(waiter) else { return BPS_INVALID_ARGUMENT }
        switch stream.join(timeoutNanoseconds: timeoutNanoseconds, observer: &observer) {
        case .finished: return BPS_OK
        case .timedOut: return BPS_TIMED_OUT
        case .cancelled: return BPS_CANCELLED
        }
    }
}

@_cdecl("bps_stream_stats")
public func abiStreamStats(_ stream: OpaquePointer?, _ out: UnsafeMutablePointer<bps_stats>?) -> bps_status {
    withStream(stream) { stream in
        // An older caller's size (exactly before the flow fields) gets the fields it has.
        guard let out, out.pointee.size == statsSizeBeforeFlow || out.pointee.size >= MemoryLayout<bps_stats>.size
        else { return BPS_INVALID_ARGUMENT }
        let size = out.pointee.size
        let stats = stream.stats()
        var c = bps_stats()
        c.size = size
        c.produced = stats.produced
        c.consumed = stats.consumed
        c.dropped = stats.dropped
        c.dropped_shed = stats.droppedShed
        c.dropped_evicted = stats.droppedEvicted
        c.dropped_cleared = stats.droppedCleared
        c.dropped_on_close = stats.droppedOnClose
        c.rejected = stats.rejected
        c.depth = stats.depth
        c.peak_depth = stats.peakDepth
        c.capacity = stats.capacity.map { Int64($0) } ?? -1
        c.backpressure_events = stats.backpressureEvents
        c.producer_waits = stats.producerWaits
        c.consumer_waits = stats.consumerWaits
        c.producer_wait_ns = stats.producerWaitNanoseconds
        c.consumer_wait_ns = stats.consumerWaitNanoseconds
        c.unfinished_tasks = stats.unfinishedTasks
        c.produced_per_second = stats.producedPerSecond
        c.consumed_per_second = stats.consumedPerSecond
        c.window_seconds = stats.windowSeconds
        c.closed = stats.isClosed ? 1 : 0
        c.flow_state = UInt32(stats.flowState.rawValue)
        c.throttle_events = stats.throttleEvents
        c.pause_events = stats.pauseEvents
        c.time_paused_ns = stats.timePausedNanoseconds
        c.throttle_delay = stats.throttleDelay
        c.rate_limit = stats.rateLimit ?? -1
        c.recent_drop_rate = stats.recentDropRate
        withUnsafeBytes(of: &c) { bytes in
            UnsafeMutableRawPointer(out).copyMemory(
                from: bytes.baseAddress!, byteCount: Swift.min(size, MemoryLayout<bps_stats>.size))
        }
        return BPS_OK
    }
}

@_cdecl("bps_stream_depth")
public func abiStreamDepth(_ stream: OpaquePointer?, _ out: UnsafeMutablePointer<UInt64>?) -> bps_status {
    withStream(stream) { stream in
        guard let out else { return BPS_INVALID_ARGUMENT }
        out.pointee = UInt64(stream.count)
        return BPS_OK
    }
}

@_cdecl("bps_stream_capacity")
public func abiStreamCapacity(_ stream: OpaquePointer?, _ out: UnsafeMutablePointer<Int64>?) -> bps_status {
    withStream(stream) { stream in
        guard let out else { return BPS_INVALID_ARGUMENT }
        out.pointee = stream.capacity.map { Int64($0) } ?? -1
        return BPS_OK
    }
}

@_cdecl("bps_stream_set_capacity")
public func abiStreamSetCapacity(_ stream: OpaquePointer?, _ capacity: Int64) -> bps_status {
    withStream(stream) { stream in
        guard case .some(let capacity) = coreCapacity(capacity),
              (try? stream.setCapacity(capacity)) != nil
        else { return BPS_INVALID_ARGUMENT }
        return BPS_OK
    }
}

@_cdecl("bps_stream_policy")
public func abiStreamPolicy(_ stream: OpaquePointer?, _ out: UnsafeMutablePointer<bps_policy>?) -> bps_status {
    withStream(stream) { stream in
        guard let out else { return BPS_INVALID_ARGUMENT }
        out.pointee = stream.isAdaptive ? BPS_POLICY_ADAPTIVE : bps_policy(rawValue: UInt32(stream.policy.rawValue))
        return BPS_OK
    }
}

@_cdecl("bps_stream_is_closed")
public func abiStreamIsClosed(_ stream: OpaquePointer?, _ out: UnsafeMutablePointer<Int32>?) -> bps_status {
    withStream(stream) { stream in
        guard let out else { return BPS_INVALID_ARGUMENT }
        out.pointee = stream.isClosed ? 1 : 0
        return BPS_OK
    }
}

@_cdecl("bps_stream_visit")
public func abiStreamVisit(
    _ stream: OpaquePointer?,
    _ visit: (@convention(c) (UnsafeMutableRawPointer?, UnsafeMutableRawPointer?) -> Int32)?,
    _ context: UnsafeMutableRawPointer?, _ outResult: UnsafeMutablePointer<Int32>?
) -> bps_status {
    withStream(stream) { stream in
        guard let visit else { return BPS_INVALID_ARGUMENT }
        var result: Int32 = 0
        stream.forEachBuffered { item in
            result = visit(item, context)
            return result == 0
        }
        outResult?.pointee = result
        return BPS_OK
    }
}

@_cdecl("bps_stream_close_with_error")
public func abiStreamCloseWithError(
    _ stream: OpaquePointer?, _ code: Int32, _ message: UnsafePointer<CChar>?
) -> bps_status {
    withStream(stream) { stream in
        let text = message.map { String(decoding: UnsafeRawBufferPointer(start: $0, count: strlen($0)), as: UTF8.self) } ?? ""
        stream.close(failure: ProducerFailure(code: code, message: text))
        return BPS_OK
    }
}

@_cdecl("bps_stream_failure")
public func abiStreamFailure(
    _ stream: OpaquePointer?, _ outCode: UnsafeMutablePointer<Int32>?,
    _ buffer: UnsafeMutablePointer<CChar>?, _ capacity: Int, _ outLength: UnsafeMutablePointer<Int>?
) -> bps_status {
    withStream(stream) { stream in
        guard let outCode, capacity >= 0 else { return BPS_INVALID_ARGUMENT }
        guard let failure = stream.failure else { return BPS_INVALID_STATE }
        outCode.pointee = failure.code
        var message = failure.message
        message.withUTF8 { utf8 in
            if let buffer, capacity > 0 {
                let n = Swift.min(utf8.count, capacity - 1)
                UnsafeMutableRawPointer(buffer).copyMemory(from: utf8.baseAddress!, byteCount: n)
                buffer[n] = 0
            }
            outLength?.pointee = utf8.count
        }
        return BPS_OK
    }
}

// MARK: - Frames

@_cdecl("bps_frame_new")
public func abiFrameNew(
    _ data: UnsafeRawPointer?, _ length: Int, _ outItem: UnsafeMutablePointer<UnsafeMutableRawPointer?>?
) -> bps_status {
    guard let outItem, length >= 0, length <= Frame.maximumLength, length == 0 || data != nil
    else { return BPS_INVALID_ARGUMENT }
    guard let item = Frame.make(copying: data, length: length) else { return BPS_NO_MEMORY }
    outItem.pointee = item
    return BPS_OK
}

@_cdecl("bps_frame_free")
public func abiFrameFree(_ item: UnsafeMutableRawPointer?) {
    Frame.free(item)
}

@_cdecl("bps_frames_free")
public func abiFramesFree(_ items: UnsafePointer<UnsafeMutableRawPointer?>?, _ count: Int) {
    guard let items, count > 0 else { return }
    Frame.freeAll(UnsafeBufferPointer(start: items, count: count))
}

@_cdecl("bps_stream_put_frame")
public func abiStreamPutFrame(
    _ stream: OpaquePointer?, _ data: UnsafeRawPointer?, _ length: Int, _ timeoutNanoseconds: Int64,
    _ waiter: UnsafePointer<bps_waiter>?
) -> bps_status {
    withStream(stream) { stream in
        guard length >= 0, length <= Frame.maximumLength, length == 0 || data != nil,
              var observer = CWaitObserver(waiter)
        else { return BPS_INVALID_ARGUMENT }
        guard let item = Frame.make(copying: data, length: length) else { return BPS_NO_MEMORY }
        let outcome = stream.put(item, timeoutNanoseconds: timeoutNanoseconds, observer: &observer)
        if outcome != .stored { Frame.free(item) }
        return status(outcome)
    }
}

@_cdecl("bps_stream_put_frames")
public func abiStreamPutFrames(
    _ stream: OpaquePointer?, _ frames: UnsafePointer<bps_bytes>?, _ count: Int,
    _ timeoutNanoseconds: Int64, _ waiter: UnsafePointer<bps_waiter>?,
    _ outTaken: UnsafeMutablePointer<Int>?
) -> bps_status {
    outTaken?.pointee = 0
    return withStream(stream) { stream in
        guard count >= 0, count == 0 || frames != nil, var observer = CWaitObserver(waiter)
        else { return BPS_INVALID_ARGUMENT }
        guard count > 0, let frames else { return BPS_OK }
        let ranges = UnsafeBufferPointer(start: frames, count: count)
        if ranges.contains(where: { $0.length < 0 || ($0.length > 0 && $0.data == nil) || $0.length > Frame.maximumLength }) {
            return BPS_INVALID_ARGUMENT
        }
        // The frame items live on the stack for the call (on the heap for huge counts).
        return withUnsafeTemporaryAllocation(of: UnsafeMutableRawPointer.self, capacity: count) { items in
            var made = 0
            guard Frame.make(copying: ranges.lazy.map { ($0.data, $0.length) }, {
                (items.baseAddress! + made).initialize(to: $0)
                made += 1
            }) else { return BPS_NO_MEMORY }
            let (taken, outcome) = stream.put(
                contentsOf: UnsafeBufferPointer(items), timeoutNanoseconds: timeoutNanoseconds,
                observer: &observer)
            for item in items[taken...] { Frame.free(item) }
            outTaken?.pointee = taken
            return status(outcome)
        }
    }
}

// MARK: - Readers

@_cdecl("bps_reader_start")
public func abiReaderStart(
    _ stream: OpaquePointer?, _ fd: Int32, _ framing: bps_framing, _ chunkSize: Int,
    _ outReader: UnsafeMutablePointer<OpaquePointer?>?
) -> bps_status {
    startReader(stream, fd, framing, chunkSize, maxLine: 0, outReader)
}

@_cdecl("bps_reader_start_ex")
public func abiReaderStartEx(
    _ stream: OpaquePointer?, _ fd: Int32, _ config: UnsafePointer<bps_reader_config>?,
    _ outReader: UnsafeMutablePointer<OpaquePointer?>?
) -> bps_status {
    guard let config, config.pointee.size >= MemoryLayout<bps_reader_config>.size else {
        if fd >= 0 { close(fd) }
        return BPS_INVALID_ARGUMENT
    }
    return startReader(stream, fd, config.pointee.framing, config.pointee.chunk_size,
                       maxLine: config.pointee.max_line, outReader)
}

/// The longest line a reader accepts by default, and at most (bpstream.h). The maximum is
/// Frame.maximumLength: a line is one frame.
private let readerMaxLineDefault = Int(BPS_READER_MAX_LINE_DEFAULT)
private let readerMaxLineMaximum = Swift.min(Int(BPS_READER_MAX_LINE_MAX), Frame.maximumLength)

/// Both reader starts. Takes `fd` on every status. `maxLine` 0: the default.
private func startReader(
    _ stream: OpaquePointer?, _ fd: Int32, _ framing: bps_framing, _ chunkSize: Int, maxLine: Int,
    _ outReader: UnsafeMutablePointer<OpaquePointer?>?
) -> bps_status {
    guard let stream, let outReader, fd >= 0, chunkSize >= 1, chunkSize <= StreamLimits.maximumCapacity,
          maxLine >= 0, maxLine <= readerMaxLineMaximum,
          framing == BPS_FRAMING_LINES || framing == BPS_FRAMING_CHUNKS
    else {
        if fd >= 0 { close(fd) }
        return BPS_INVALID_ARGUMENT
    }
    let itemStream = Unmanaged<ItemStream>.fromOpaque(UnsafeRawPointer(stream)).takeUnretainedValue()
    switch NativeReader.start(
        stream: itemStream, fd: fd, splitLines: framing == BPS_FRAMING_LINES, readSize: chunkSize,
        maxLine: maxLine == 0 ? readerMaxLineDefault : maxLine)
    {
    case .success(let reader):
        outReader.pointee = OpaquePointer(Unmanaged.passRetained(reader).toOpaque())
        return BPS_OK
    case .failure(let error):
        errno = error.code
        return BPS_OS_ERROR
    }
}

@_cdecl("bps_reader_stop")
public func abiReaderStop(_ reader: OpaquePointer?) -> bps_status {
    guard let reader else { return BPS_INVALID_ARGUMENT }
    let unmanaged = Unmanaged<NativeReader>.fromOpaque(UnsafeRawPointer(reader))
    unmanaged.takeUnretainedValue().stopAndJoin()
    unmanaged.release()
    return BPS_OK
}

@_cdecl("bps_stream_reserve")
public func abiStreamReserve(
    _ stream: OpaquePointer?, _ outItems: UnsafeMutablePointer<UnsafeMutableRawPointer?>?,
    _ maxItems: Int, _ timeoutNanoseconds: Int64, _ waiter: UnsafePointer<bps_waiter>?,
    _ outCount: UnsafeMutablePointer<Int>?
) -> bps_status {
    getMany(stream, outItems, maxItems, timeoutNanoseconds, waiter, outCount, reserving: true)
}

@_cdecl("bps_stream_mark_delivered")
public func abiStreamMarkDelivered(_ stream: OpaquePointer?, _ count: Int) -> bps_status {
    guard let stream, count >= 0 else { return BPS_INVALID_ARGUMENT }
    Unmanaged<ItemStream>.fromOpaque(UnsafeRawPointer(stream))._withUnsafeGuaranteedRef {
        $0.markDelivered(count)
    }
    return BPS_OK
}

@_cdecl("bps_stream_delivery_counter")
public func abiStreamDeliveryCounter(
    _ stream: OpaquePointer?, _ out: UnsafeMutablePointer<UnsafeMutableRawPointer?>?
) -> bps_status {
    withStream(stream) { stream in
        guard let out else { return BPS_INVALID_ARGUMENT }
        out.pointee = stream.deliveryCounter
        return BPS_OK
    }
}

@_cdecl("bps_stream_settle")
public func abiStreamSettle(
    _ stream: OpaquePointer?, _ delivered: Int, _ returned: UnsafePointer<UnsafeMutableRawPointer?>?,
    _ returnedCount: Int
) -> bps_status {
    withStream(stream) { stream in
        guard delivered >= 0, returnedCount >= 0, returnedCount == 0 || returned != nil
        else { return BPS_INVALID_ARGUMENT }
        var items: [UnsafeMutableRawPointer] = []
        if returnedCount > 0, let returned {
            items.reserveCapacity(returnedCount)
            for item in UnsafeBufferPointer(start: returned, count: returnedCount) {
                guard let item else { return BPS_INVALID_ARGUMENT }
                items.append(item)
            }
        }
        stream.settle(delivered: delivered, returning: items)
        return BPS_OK
    }
}

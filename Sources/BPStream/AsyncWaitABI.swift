// The C ABI for waiters that do not block a thread (bpstream.h, "Readiness watches"):
// @_cdecl thunks over BoundedStream.watch / arm / unwatch, tryPut and account.
//
// Handles: a bps_watch* is an Unmanaged<WatchHandle>, +1 from bps_stream_watch until
// bps_watch_release. The caller's context lives in a CallerCallback that the core's watch
// (through its notify closure) owns: it is released when the last of the handle and any
// notification in flight lets go of it, so release_context never races a notify.
import BPStreamCore
import CBPStream

/// What a bps_watch* points to: the stream (retained) and its watch.
private final class WatchHandle {
    let stream: ItemStream
    let watch: StreamWatch

    init(stream: ItemStream, watch: StreamWatch) {
        self.stream = stream
        self.watch = watch
    }
}

@_cdecl("bps_stream_watch")
public func abiStreamWatch(
    _ stream: OpaquePointer?, _ notify: bps_notify_fn?, _ release: bps_context_release_fn?,
    _ context: UnsafeMutableRawPointer?, _ out: UnsafeMutablePointer<OpaquePointer?>?
) -> bps_status {
    guard let stream, let notify, let out else { return BPS_INVALID_ARGUMENT }
    let target = Unmanaged<ItemStream>.fromOpaque(UnsafeRawPointer(stream)).takeUnretainedValue()
    let owned = CallerCallback(fn: notify, context: context, release: release)
    let watch = target.watch { events in owned.fn(owned.context, events.rawValue) }
    let handle = WatchHandle(stream: target, watch: watch)
    out.pointee = OpaquePointer(Unmanaged.passRetained(handle).toOpaque())
    return BPS_OK
}

@_cdecl("bps_watch_arm")
public func abiWatchArm(
    _ watch: OpaquePointer?, _ events: UInt32, _ out: UnsafeMutablePointer<UInt32>?
) -> bps_status {
    guard let watch, let out else { return BPS_INVALID_ARGUMENT }
    let wanted = Readiness(rawValue: events).intersection([.readable, .writable, .tasksDone])
    guard !wanted.isEmpty, events & ~(BPS_READABLE | BPS_WRITABLE | BPS_TASKS_DONE) == 0 else {
        return BPS_INVALID_ARGUMENT
    }
    return Unmanaged<WatchHandle>.fromOpaque(UnsafeRawPointer(watch))._withUnsafeGuaranteedRef {
        out.pointee = $0.stream.arm($0.watch, for: wanted).rawValue
        return BPS_OK
    }
}

@_cdecl("bps_watch_release")
public func abiWatchRelease(_ watch: OpaquePointer?) -> bps_status {
    guard let watch else { return BPS_INVALID_ARGUMENT }
    let handle = Unmanaged<WatchHandle>.fromOpaque(UnsafeRawPointer(watch)).takeRetainedValue()
    handle.stream.unwatch(handle.watch)
    return BPS_OK
}

@_cdecl("bps_stream_try_put")
public func abiStreamTryPut(_ stream: OpaquePointer?, _ item: UnsafeMutableRawPointer?) -> bps_status {
    guard let item else { return BPS_INVALID_ARGUMENT }
    return withStream(stream) { stream in status(stream.tryPut(item)) }
}

@_cdecl("bps_stream_account_async_wait")
public func abiStreamAccountAsyncWait(
    _ stream: OpaquePointer?, _ what: UInt32, _ waitedNanoseconds: Int64
) -> bps_status {
    let wait: AsyncWait
    switch what {
    case BPS_ASYNC_PUT_WAITS: wait = .putWaits
    case BPS_ASYNC_PUT_WAITED: wait = .putWaited(nanoseconds: waitedNanoseconds)
    case BPS_ASYNC_PUT_GAVE_UP: wait = .putGaveUp(nanoseconds: waitedNanoseconds)
    case BPS_ASYNC_GET_WAITS: wait = .getWaits
    case BPS_ASYNC_GET_WAITED: wait = .getWaited(nanoseconds: waitedNanoseconds)
    default: return BPS_INVALID_ARGUMENT
    }
    return withStream(stream) { stream in
        stream.account(wait)
        return BPS_OK
    }
}

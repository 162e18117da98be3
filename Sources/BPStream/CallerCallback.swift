// A C caller's callback as the ABI keeps it: its function, its context and the context's
// release. Watches (AsyncWaitABI.swift) and flow listeners (FlowABI.swift) share one rule:
// release_context runs exactly once, when the last reference goes.
import CBPStream

/// The caller's function `fn` and its `context`; calls `release(context)` when freed.
///
/// Everyone who may still call `fn` holds a reference (the handle given to the caller,
/// the core's closure, a notification or delivery in flight), so the release never races
/// a call.
final class CallerCallback<Fn>: @unchecked Sendable {
    let fn: Fn
    let context: UnsafeMutableRawPointer?
    let release: bps_context_release_fn?

    init(fn: Fn, context: UnsafeMutableRawPointer?, release: bps_context_release_fn?) {
        self.fn = fn
        self.context = context
        self.release = release
    }

    deinit { release?(context) }
}

// The flow-control functions of bpstream.h ("Flow control"): the flow state, flow
// listeners, and what stream creation needs for flow and pacing (growable-struct sizes,
// the adaptive policy's default rate). Thunks only: the core (FlowGate.swift) does the work.
import BPStreamCore
import CBPStream

/// bps_config's size before the flow fields: an older caller's struct is still accepted.
let configSizeBeforeFlow = MemoryLayout<bps_config>.offset(of: \bps_config.flow)!
/// bps_stats's size before the flow fields: an older caller gets the fields it has room for.
let statsSizeBeforeFlow = MemoryLayout<bps_stats>.offset(of: \bps_stats.flow_state)!

/// BPS_POLICY_ADAPTIVE's rate when the config names none: AIMD(1000, increase 100, window 0.1 s).
func defaultAdaptiveRate() throws(StreamError) -> any RateController {
    try AIMD(initial: 1000, increase: 100, windowNanoseconds: 100_000_000)  // = BoundedStream.adaptive's
}

@_cdecl("bps_stream_flow_state")
public func abiStreamFlowState(_ stream: OpaquePointer?, _ out: UnsafeMutablePointer<bps_flow_state>?) -> bps_status {
    withStream(stream) { stream in
        guard let out else { return BPS_INVALID_ARGUMENT }
        out.pointee = bps_flow_state(rawValue: UInt32(stream.flowState.rawValue))
        return BPS_OK
    }
}

@_cdecl("bps_stream_flow_gate")
public func abiStreamFlowGate(
    _ stream: OpaquePointer?, _ outState: UnsafeMutablePointer<bps_flow_state>?,
    _ outDelay: UnsafeMutablePointer<Int64>?
) -> bps_status {
    withStream(stream) { stream in
        guard let outState, let outDelay else { return BPS_INVALID_ARGUMENT }
        let gate = stream.flowGateForCallerWaiting()
        outState.pointee = bps_flow_state(rawValue: UInt32(gate.state.rawValue))
        outDelay.pointee = gate.delayNanoseconds
        return BPS_OK
    }
}

@_cdecl("bps_stream_flow_gave_up")
public func abiStreamFlowGaveUp(_ stream: OpaquePointer?) -> bps_status {
    withStream(stream) { stream in
        stream.countPutGaveUpAtGate()
        return BPS_OK
    }
}

/// What a bps_flow_listener* points to: the stream (a strong reference) and the core listener.
private final class FlowListenerHandle {
    let stream: ItemStream
    let listener: FlowListener

    init(stream: ItemStream, listener: FlowListener) {
        self.stream = stream
        self.listener = listener
    }
}

@_cdecl("bps_stream_on_flow_change")
public func abiStreamOnFlowChange(
    _ stream: OpaquePointer?, _ fn: bps_flow_fn?, _ releaseContext: bps_context_release_fn?,
    _ context: UnsafeMutableRawPointer?, _ outListener: UnsafeMutablePointer<OpaquePointer?>?
) -> bps_status {
    withStream(stream) { stream in
        guard let fn, let outListener else { return BPS_INVALID_ARGUMENT }
        // Released when the last reference goes: the listener handle's, and those of
        // deliveries in progress (they hold the core listener, whose closure holds it).
        let callback = CallerCallback(fn: fn, context: context, release: releaseContext)
        let listener = stream.onFlowChange { transition in
            callback.fn(callback.context, bps_flow_state(rawValue: UInt32(transition.old.rawValue)),
                        bps_flow_state(rawValue: UInt32(transition.new.rawValue)), transition.fill)
        }
        let handle = FlowListenerHandle(stream: stream, listener: listener)
        outListener.pointee = OpaquePointer(Unmanaged.passRetained(handle).toOpaque())
        return BPS_OK
    }
}

@_cdecl("bps_flow_listener_remove")
public func abiFlowListenerRemove(_ listener: OpaquePointer?) -> bps_status {
    guard let listener else { return BPS_INVALID_ARGUMENT }
    let handle = Unmanaged<FlowListenerHandle>.fromOpaque(UnsafeRawPointer(listener)).takeRetainedValue()
    handle.stream.removeFlowListener(handle.listener)
    return BPS_OK
}

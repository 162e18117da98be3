// Flow states from watermarks: a pure value machine that classifies a stream's fill
// (depth / capacity) into NORMAL / THROTTLED / PAUSED / DROPPING with hysteresis, counts
// entries, accumulates time paused and computes the throttle delay. No threads, no clock
// reads: every transition is given the depth and the time. `BoundedStream` owns one behind
// its lock (see `StreamStateMachine.flow`) and acts on what it reports after unlocking.

/// Where a stream's fill stands against its flow marks.
public enum FlowState: UInt8, Sendable, CaseIterable, Comparable {
    /// Below the throttle mark: puts are never delayed.
    case normal = 0
    /// From the throttle mark up to the pause mark: a put that may wait is delayed.
    case throttled = 1
    /// Above the pause mark and not full: a put that may wait waits for the fill to fall.
    case paused = 2
    /// Full: the overflow policy decides, as without flow control.
    case dropping = 3

    public static func < (lhs: FlowState, rhs: FlowState) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// The watermarks and delays of flow control (fractions of the capacity, seconds).
///
/// With fill = depth / capacity: NORMAL below `throttleAt`; THROTTLED from `throttleAt` to
/// `pauseAt` (inclusive), where a put that may wait is delayed by
/// `minDelay + (maxDelay - minDelay) * (fill - throttleAt) / (pauseAt - throttleAt)`;
/// PAUSED above `pauseAt` while not full; DROPPING when full. With `hysteresis` h > 0 a
/// state is left downwards only once the fill falls below its entry mark minus h.
public struct FlowControl: Sendable, Equatable {
    /// The fill at which THROTTLED begins, `0 < throttleAt <= pauseAt`.
    public var throttleAt: Double
    /// The fill above which PAUSED begins, `throttleAt <= pauseAt <= 1`.
    public var pauseAt: Double
    /// The delay at the throttle mark, seconds (`>= 0`).
    public var minDelay: Double
    /// The delay at the pause mark, seconds (`>= minDelay`).
    public var maxDelay: Double
    /// How far below its entry mark the fill must fall to leave a state (`0 <= h < 1`).
    public var hysteresis: Double

    /// The defaults: throttle at 0.70, pause above 0.90, delays 0 to 0.5 s, no hysteresis.
    public static let `default` = try! FlowControl()

    /// - Throws: `StreamError.invalidArgument` naming the value out of range.
    public init(
        throttleAt: Double = 0.70, pauseAt: Double = 0.90, minDelay: Double = 0.0,
        maxDelay: Double = 0.5, hysteresis: Double = 0.0
    ) throws(StreamError) {
        guard throttleAt > 0, throttleAt <= 1 else {
            throw .invalidArgument("throttle_at must be in (0, 1], got \(throttleAt)")
        }
        guard pauseAt >= throttleAt, pauseAt <= 1 else {
            throw .invalidArgument("pause_at must be in [throttle_at, 1], got \(pauseAt)")
        }
        guard minDelay >= 0, minDelay.isFinite else {
            throw .invalidArgument("min_delay must be a finite number >= 0, got \(minDelay)")
        }
        guard maxDelay >= minDelay, maxDelay.isFinite, maxDelay <= 86_400 else {
            throw .invalidArgument("max_delay must be finite, >= min_delay and at most 86400, got \(maxDelay)")
        }
        guard hysteresis >= 0, hysteresis < 1 else {
            throw .invalidArgument("hysteresis must be in [0, 1), got \(hysteresis)")
        }
        self.throttleAt = throttleAt
        self.pauseAt = pauseAt
        self.minDelay = minDelay
        self.maxDelay = maxDelay
        self.hysteresis = hysteresis
    }
}

/// One change of flow state, reported once, in order (`BoundedStream.onFlowChange`).
public struct FlowTransition: Sendable, Equatable {
    public var old: FlowState
    public var new: FlowState
    /// depth / capacity right after the change.
    public var fill: Double

    public init(old: FlowState, new: FlowState, fill: Double) {
        self.old = old
        self.new = new
        self.fill = fill
    }
}

/// The flow state machine of one stream: a value, driven by `observe(depth:now:)` after
/// every depth change (and `setCapacity` after a capacity change).
///
/// Invariants: `state` is what the marks say about the last depth observed, given the
/// state before it (hysteresis); `riseAt`/`fallBelow` are the depths at which the next
/// observation can change it, so a caller skips `observe` with two integer compares
/// (`mayChange`). An unbounded stream stays NORMAL.
///
/// Counting: `throttleEvents` counts transitions NORMAL -> THROTTLED; `pauseEvents`
/// transitions from NORMAL or THROTTLED to PAUSED or DROPPING (a batch that jumps past the
/// pause mark paused producers too); `timePaused` is the time spent in PAUSED or DROPPING.
public struct FlowMonitor: Sendable {
    /// The marks and delays.
    public let control: FlowControl
    /// The bound; `Int.max` when unbounded.
    public private(set) var capacity: Int
    public private(set) var state: FlowState = .normal
    public private(set) var throttleEvents: UInt64 = 0
    public private(set) var pauseEvents: UInt64 = 0
    /// When the current PAUSED/DROPPING spell began (valid while in one).
    @usableFromInline var pausedSince: Int64 = 0
    /// Closed PAUSED/DROPPING spells, nanoseconds.
    @usableFromInline var pausedNanoseconds: Int64 = 0
    /// A depth at or above this may raise the state (`Int.max`: none can).
    public private(set) var riseAt: Int = Int.max
    /// A depth below this may lower the state (`Int.min`: none can).
    public private(set) var fallBelow: Int = Int.min
    // The marks as depths, for `capacity` (see `computeMarks`).
    @usableFromInline var throttleEntry = Int.max, pauseEntry = Int.max
    @usableFromInline var throttledExit = Int.min, pausedExit = Int.min, droppingExit = Int.min

    /// A monitor for a stream of `capacity` (`nil`: unbounded) at `depth`, at time `now`.
    public init(control: FlowControl = .default, capacity: Int?, depth: Int = 0, now: Int64 = 0) {
        self.control = control
        self.capacity = capacity ?? Int.max
        computeMarks()
        _ = observe(depth: depth, now: now)
        throttleEvents = 0
        pauseEvents = 0
    }

    /// Whether `observe(depth:)` could change the state: two compares, for hot paths.
    @inlinable @inline(__always)
    public func mayChange(depth: Int) -> Bool { depth >= riseAt || depth < fallBelow }

    /// depth / capacity (0 when unbounded).
    public func fill(depth: Int) -> Double {
        capacity == Int.max ? 0 : Double(depth) / Double(capacity)
    }

    /// Classifies `depth` (the depth now) at time `now`; returns the transition, if any.
    public mutating func observe(depth: Int, now: Int64) -> FlowTransition? {
        guard mayChange(depth: depth) else { return nil }
        let old = state
        var new = old
        if depth >= riseAt {
            if depth >= capacity { new = .dropping }
            else if depth >= pauseEntry { new = .paused }
            else if depth >= throttleEntry { new = .throttled }
            new = Swift.max(new, old)
        } else {
            // Walk down: each state is left only below its own exit mark.
            while true {
                switch new {
                case .dropping where depth < droppingExit: new = .paused; continue
                case .paused where depth < pausedExit: new = .throttled; continue
                case .throttled where depth < throttledExit: new = .normal; continue
                default: break
                }
                break
            }
        }
        guard new != old else { return nil }
        enter(new, from: old, now: now)
        return FlowTransition(old: old, new: new, fill: fill(depth: depth))
    }

    /// The capacity changed (`nil`: unbounded): re-marks, then classifies `depth` from the
    /// state it is in (hysteresis kept). An unbounded stream is NORMAL.
    public mutating func setCapacity(_ capacity: Int?, depth: Int, now: Int64) -> FlowTransition? {
        self.capacity = capacity ?? Int.max
        computeMarks()
        guard self.capacity == Int.max else { return observe(depth: depth, now: now) }
        let old = state
        guard old != .normal else { return nil }
        enter(.normal, from: old, now: now)
        return FlowTransition(old: old, new: .normal, fill: 0)
    }

    /// The delay a put that may wait takes at `depth`, nanoseconds: 0 outside THROTTLED.
    public func throttleDelayNanoseconds(depth: Int) -> Int64 {
        guard state == .throttled else { return 0 }
        return Int64((throttleDelay(depth: depth) * 1e9).rounded())
    }

    /// The delay at `depth`, seconds: 0 outside THROTTLED.
    public func throttleDelay(depth: Int) -> Double {
        guard state == .throttled else { return 0 }
        let c = control
        let span = c.pauseAt - c.throttleAt
        // Clamped: with hysteresis THROTTLED reaches below the throttle mark.
        let fraction = span > 0 ? Swift.min(Swift.max((fill(depth: depth) - c.throttleAt) / span, 0), 1) : 0
        return c.minDelay + (c.maxDelay - c.minDelay) * fraction
    }

    /// Total time spent in PAUSED or DROPPING up to `now`, the open spell included.
    public func timePausedNanoseconds(now: Int64) -> Int64 {
        state >= .paused ? pausedNanoseconds + Swift.max(now - pausedSince, 0) : pausedNanoseconds
    }

    // MARK: - Internals

    mutating func enter(_ new: FlowState, from old: FlowState, now: Int64) {
        if old == .normal && new == .throttled { throttleEvents &+= 1 }
        if old < .paused && new >= .paused {
            pauseEvents &+= 1
            pausedSince = now
        }
        if old >= .paused && new < .paused { pausedNanoseconds += Swift.max(now - pausedSince, 0) }
        state = new
        setMarks()
    }

    /// `riseAt` / `fallBelow` for `state`.
    mutating func setMarks() {
        switch state {
        case .normal: riseAt = throttleEntry; fallBelow = Int.min
        case .throttled: riseAt = Swift.min(pauseEntry, capacity); fallBelow = throttledExit
        case .paused: riseAt = capacity; fallBelow = pausedExit
        case .dropping: riseAt = Int.max; fallBelow = droppingExit
        }
    }

    /// The marks as depths for `capacity`: each the least depth whose fill passes the test.
    mutating func computeMarks() {
        defer { setMarks() }
        guard capacity != Int.max else {
            throttleEntry = Int.max; pauseEntry = Int.max
            throttledExit = Int.min; pausedExit = Int.min; droppingExit = Int.min
            return
        }
        let c = control, h = c.hysteresis
        let cap = Double(capacity)
        func least(_ test: (Double) -> Bool, near mark: Double) -> Int {
            var d = Swift.min(Swift.max(Int((mark * cap).rounded(.down)), 0), capacity)
            while d > 0 && test(Double(d - 1) / cap) { d -= 1 }
            while d <= capacity && !test(Double(d) / cap) { d += 1 }
            return d  // capacity + 1 when no depth passes
        }
        throttleEntry = least({ $0 >= c.throttleAt }, near: c.throttleAt)
        pauseEntry = Swift.min(least({ $0 > c.pauseAt }, near: c.pauseAt), capacity)
        throttledExit = h > 0 ? least({ $0 >= c.throttleAt - h }, near: c.throttleAt - h) : throttleEntry
        pausedExit = h > 0 ? least({ $0 >= c.pauseAt - h }, near: c.pauseAt - h) : pauseEntry
        droppingExit = h > 0 ? Swift.min(least({ $0 >= 1 - h }, near: 1 - h), capacity) : capacity
    }
}

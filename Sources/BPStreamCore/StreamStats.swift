/// One atomic snapshot of a stream's metrics, taken under its lock.
///
/// `produced == consumed + dropped + depth` holds in every snapshot, whatever the
/// concurrency, because every counter below changes under the same lock as the buffer.
public struct StreamStats: Sendable, Equatable {
    /// Items handed over by a successful put, shed ones included.
    public var produced: UInt64 = 0
    /// Items taken out by gets.
    public var consumed: UInt64 = 0
    /// Shed on arrival (`dropNewest`).
    public var droppedShed: UInt64 = 0
    /// Evicted from the front (`dropOldest`).
    public var droppedEvicted: UInt64 = 0
    /// Cleared with the backlog (`dropAll`).
    public var droppedCleared: UInt64 = 0
    /// Discarded by `close(immediate: true)`.
    public var droppedOnClose: UInt64 = 0
    /// Puts that failed: `reject`, timed out, or non-blocking on a full `block` stream.
    public var rejected: UInt64 = 0
    /// Items buffered now.
    public var depth: UInt64 = 0
    /// The most items ever buffered at once.
    public var peakDepth: UInt64 = 0
    /// The capacity now; `nil` when unbounded.
    public var capacity: Int? = nil
    /// Puts that had to wait, items shed or evicted, and backlog clears (`dropAll`).
    public var backpressureEvents: UInt64 = 0
    /// Puts that had to wait.
    public var producerWaits: UInt64 = 0
    /// Gets that had to wait.
    public var consumerWaits: UInt64 = 0
    /// Total nanoseconds producers spent waiting.
    public var producerWaitNanoseconds: UInt64 = 0
    /// Total nanoseconds consumers spent waiting.
    public var consumerWaitNanoseconds: UInt64 = 0
    /// Items enqueued and not yet marked done, evicted, cleared or discarded.
    public var unfinishedTasks: UInt64 = 0
    /// Put rate over the recent window (items per second).
    public var producedPerSecond: Double = 0
    /// Get rate over the recent window (items per second).
    public var consumedPerSecond: Double = 0
    /// The span (seconds) the two rates cover, about one second on a busy stream.
    public var windowSeconds: Double = 0
    /// Whether the stream is closed.
    public var isClosed: Bool = false
    /// The flow state of the depth now (classified with the default marks without `flow:`).
    public var flowState: FlowState = .normal
    /// Transitions NORMAL -> THROTTLED.
    public var throttleEvents: UInt64 = 0
    /// Transitions from NORMAL or THROTTLED to PAUSED or DROPPING.
    public var pauseEvents: UInt64 = 0
    /// Total time in PAUSED or DROPPING, the current spell included (on the stream's clock).
    public var timePausedNanoseconds: UInt64 = 0
    /// The delay a put that may wait takes now, seconds: 0 outside THROTTLED.
    public var throttleDelay: Double = 0
    /// The rate controller's limit (items per second); `nil` without one.
    public var rateLimit: Double? = nil
    /// dropped / produced over the recent window (`windowSeconds`); 0 when nothing was produced.
    public var recentDropRate: Double = 0

    public init() {}

    /// Items dropped for any reason.
    public var dropped: UInt64 { droppedShed + droppedEvicted + droppedCleared + droppedOnClose }

    /// `produced == consumed + dropped + depth`: nothing lost silently.
    public var identityHolds: Bool { produced == consumed + dropped + depth }
}

/// Recent-rate bookkeeping: a ring of (time, produced, consumed) samples taken at most every
/// `interval`, at operation boundaries and at snapshots, so the hot path reads the clock
/// only once every `operationsPerClockRead` operations.
@usableFromInline
struct RateWindow {
    @usableFromInline
    struct Sample {
        @usableFromInline var time: Int64
        @usableFromInline var produced: UInt64
        @usableFromInline var consumed: UInt64
        @usableFromInline var dropped: UInt64
        @usableFromInline init(time: Int64, produced: UInt64, consumed: UInt64, dropped: UInt64) {
            self.time = time
            self.produced = produced
            self.consumed = consumed
            self.dropped = dropped
        }
    }

    @usableFromInline static var window: Int64 { 1_000_000_000 }
    @usableFromInline static var interval: Int64 { 125_000_000 }
    @usableFromInline static var operationsPerClockRead: UInt32 { 256 }

    @usableFromInline static var maximumSamples: Int { Int(window / interval) + 2 }

    /// Oldest first; at most `maximumSamples`.
    @usableFromInline var samples: [Sample]
    @usableFromInline var operationsSinceClockRead: UInt32 = 0

    @usableFromInline
    init(now: Int64) {
        samples = [Sample(time: now, produced: 0, consumed: 0, dropped: 0)]
        samples.reserveCapacity(Self.maximumSamples)
    }

    /// Counts one operation; every so often reads the clock and maybe records a sample.
    @inlinable @inline(__always)
    mutating func tick(produced: UInt64, consumed: UInt64, dropped: @autoclosure () -> UInt64) {
        operationsSinceClockRead &+= 1
        if operationsSinceClockRead >= Self.operationsPerClockRead {
            operationsSinceClockRead = 0
            record(now: MonotonicClock.now(), produced: produced, consumed: consumed, dropped: dropped())
        }
    }

    @usableFromInline
    mutating func record(now: Int64, produced: UInt64, consumed: UInt64, dropped: UInt64) {
        if let last = samples.last, now - last.time < Self.interval { return }
        if samples.count >= Self.maximumSamples { samples.removeFirst() }
        samples.append(Sample(time: now, produced: produced, consumed: consumed, dropped: dropped))
    }

    /// The base of the rates: the newest sample at least one window old, else the oldest.
    @usableFromInline
    func base(now: Int64) -> Sample {
        for sample in samples.reversed() where now - sample.time >= Self.window { return sample }
        return samples[0]
    }

    /// dropped / produced since `base(now:)` (0 when nothing was produced since): the
    /// drop rate of about the last second (a health check's `recent_drop_rate`).
    @usableFromInline
    func recentDropRate(now: Int64, produced: UInt64, dropped: UInt64) -> Double {
        let base = base(now: now)
        let producedDelta = produced >= base.produced ? produced - base.produced : 0
        let droppedDelta = dropped >= base.dropped ? dropped - base.dropped : 0
        guard producedDelta > 0 else { return 0 }
        return Swift.min(Double(droppedDelta) / Double(producedDelta), 1)
    }

    /// Rates from the newest sample at least one window old (the oldest one, while the
    /// stream is younger than a window) up to now: the span is a window or a little more,
    /// never a sliver, so a quiet spell reads as a low rate, not as noise.
    @usableFromInline
    func rates(now: Int64, produced: UInt64, consumed: UInt64) -> (Double, Double, Double) {
        let base = base(now: now)
        let span = Double(now - base.time) / 1e9
        guard span > 0 else { return (0, 0, 0) }
        // Counters only grow; the guard keeps a snapshot from ever trapping regardless.
        let producedDelta = produced >= base.produced ? produced - base.produced : 0
        let consumedDelta = consumed >= base.consumed ? consumed - base.consumed : 0
        return (Double(producedDelta) / span, Double(consumedDelta) / span, span)
    }
}

/// What a full stream does with the next put. Chosen at creation; never implicit.
public enum OverflowPolicy: UInt8, Sendable, CaseIterable {
    /// The producer waits for room (until its timeout, after which the put fails with `full`).
    case block = 0
    /// The oldest buffered item is evicted and the new one stored: latest-state streams.
    case dropOldest = 1
    /// The incoming item is shed and the backlog keeps its order: event streams.
    case dropNewest = 2
    /// The put fails at once with `full`; the caller keeps the item: fail-fast admission.
    case reject = 3
    /// The whole backlog is cleared, then the new item stored: emergency reset.
    case dropAll = 4
}

/// Why the stream let go of an item on its own (reported to `onDrop`).
public enum DropReason: Sendable {
    /// Evicted from the front by a `dropOldest` put.
    case evicted
    /// Cleared with the whole backlog by a `dropAll` put.
    case cleared
    /// Discarded by `close(immediate: true)`.
    case discardedOnClose
    /// Still buffered when the stream itself was deinitialised.
    case leftAtDeinit
}

/// Errors of the throwing Swift API.
public enum StreamError: Error, Equatable, Sendable {
    /// No room: a `reject` put, or a `block` put whose timeout passed.
    case full
    /// Nothing to get before the timeout passed.
    case empty
    /// The stream is closed (puts), or closed and drained (gets).
    case closed
    /// A wait observer cancelled the wait; nothing changed.
    case cancelled
    /// `join` gave up: tasks remained unfinished when the timeout passed.
    case timedOut
    /// An argument was out of range; the message says which.
    case invalidArgument(String)
    /// `taskDone()` was called more times than items were put.
    case tooManyTaskDone
    /// The producer closed the stream with this error and every item before it was taken.
    case failed(ProducerFailure)
    /// A put's item could not be stored: the buffer could not grow (out of memory).
    case noMemory
}

/// An error a producer ended the stream with: consumers get every item put before it,
/// then this error (from every get after the drain).
public struct ProducerFailure: Error, Equatable, Sendable {
    /// An `errno` value, or 0 for an error that is not an OS error.
    public var code: Int32
    /// What went wrong, for people.
    public var message: String

    public init(code: Int32, message: String) {
        self.code = code
        self.message = message
    }
}

/// The capacity bounds the C ABI and the Swift API share.
public enum StreamLimits {
    /// The largest bounded capacity (2^30 items).
    public static let maximumCapacity = 1 << 30
}

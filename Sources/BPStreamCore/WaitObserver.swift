/// Hooks a blocking call runs while it waits, so a caller can let go of and take back its
/// own locks around the wait (a language runtime's global lock) and cancel the wait (Ctrl-C).
///
/// - Important: every hook runs on the waiting thread WITHOUT the stream's lock held.
///   `willWait` runs once before the first wait of an episode, `shouldCancel` every
///   `pollIntervalNanoseconds` while waiting, `didWait` once after the episode, before the
///   call returns (or, in a batch put, before it carries on).
public protocol WaitObserver {
    /// `> 0`: call `shouldCancel()` this often while waiting; `<= 0`: never.
    var pollIntervalNanoseconds: Int64 { get }
    /// About to wait.
    mutating func willWait()
    /// Still waiting; return `true` to cancel the call (it then changes nothing).
    mutating func shouldCancel() -> Bool
    /// Done waiting.
    mutating func didWait()
}

/// The observer for callers with nothing to do around a wait.
public struct NoWaitObserver: WaitObserver {
    /// Never read. It gives the observer a size, so every `var observer` has an address of
    /// its own: an empty struct passed `inout` gets a placeholder address (the same on every
    /// thread, or whatever a register held), and ThreadSanitizer's exclusivity checks then
    /// report the `mutating` hook calls of unrelated threads as "Swift access races".
    @usableFromInline var unused: UInt8 = 0

    public init() {}
    @inlinable public var pollIntervalNanoseconds: Int64 { 0 }
    @inlinable public mutating func willWait() {}
    @inlinable public mutating func shouldCancel() -> Bool { false }
    @inlinable public mutating func didWait() {}
}

/// How a non-throwing put ended.
public enum PutOutcome: Sendable, Equatable {
    /// The stream holds the item.
    case stored
    /// Counted as produced and shed (`dropNewest`); the caller keeps the item.
    case shed
    /// No room (`reject`, or the timeout passed under `block`); the caller keeps the item.
    case full
    /// The stream is closed; the caller keeps the item.
    case closed
    /// The observer cancelled the wait; the caller keeps the item.
    case cancelled
    /// The stream's buffer could not grow to hold the item (memory allocation failed);
    /// nothing changed or was counted; the caller keeps the item.
    case noMemory
}

/// How a non-throwing get ended (other than with an item).
public enum GetFailure: Error, Sendable, Equatable {
    /// Nothing arrived before the timeout passed.
    case empty
    /// Closed and drained.
    case closed
    /// The observer cancelled the wait.
    case cancelled
    /// Closed with a producer's error and drained.
    case failed(ProducerFailure)
}

/// How `join` ended.
public enum JoinOutcome: Sendable, Equatable {
    case finished
    case timedOut
    case cancelled
}

extension Duration {
    /// Whole nanoseconds, clamped to `0...Int64.max`.
    @usableFromInline
    var clampedNanoseconds: Int64 {
        let (seconds, attoseconds) = components
        if seconds < 0 || attoseconds < 0 { return 0 }  // any negative duration: don't wait
        if seconds >= Int64.max / 1_000_000_000 - 1 { return Int64.max }
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}

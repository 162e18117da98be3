#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Nanoseconds on the monotonic clock: the time base of every timeout and wait metric.
@usableFromInline
enum MonotonicClock {
    @inlinable
    static func now() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int64(ts.tv_sec) &* 1_000_000_000 &+ Int64(ts.tv_nsec)
    }
}

/// A pthread mutex at a fixed heap address (pthread objects must never move).
///
/// Unexpected pthread errors are programming errors and trap; nothing here is expected
/// to fail at run time.
@usableFromInline
final class PthreadLock {
    @usableFromInline
    let mutex: UnsafeMutablePointer<pthread_mutex_t>

    @usableFromInline
    init() {
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        Self.initialize(mutex)
    }

    /// In a forked child only (its one thread): the mutex may have been held by a thread
    /// of the parent (`ForkRegistry`), so it is made anew, unlocked.
    func reinitializeAfterFork() {
        Self.initialize(mutex)
    }

    private static func initialize(_ mutex: UnsafeMutablePointer<pthread_mutex_t>) {
        var attr = pthread_mutexattr_t()
        pthread_mutexattr_init(&attr)
        #if os(Linux)
        // glibc's PTHREAD_MUTEX_ADAPTIVE_NP (3; hidden behind _GNU_SOURCE): spin briefly on a
        // contended lock before sleeping. Critical sections here are a few dozen
        // instructions, so a producer and a consumer on two cores rarely need a futex.
        pthread_mutexattr_settype(&attr, 3)
        #endif
        let err = pthread_mutex_init(mutex, &attr)
        pthread_mutexattr_destroy(&attr)
        precondition(err == 0, "pthread_mutex_init failed: \(err)")
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deinitialize(count: 1)
        mutex.deallocate()
    }

    @inlinable
    func lock() {
        let err = pthread_mutex_lock(mutex)
        precondition(err == 0, "pthread_mutex_lock failed: \(err)")
    }

    @inlinable
    func unlock() {
        let err = pthread_mutex_unlock(mutex)
        precondition(err == 0, "pthread_mutex_unlock failed: \(err)")
    }
}

/// A condition variable on the monotonic clock, always used with one `PthreadLock`.
@usableFromInline
final class PthreadCondition {
    @usableFromInline
    let cond: UnsafeMutablePointer<pthread_cond_t>

    @usableFromInline
    init() {
        cond = .allocate(capacity: 1)
        cond.initialize(to: pthread_cond_t())
        Self.initialize(cond)
    }

    /// In a forked child only: its waiters were threads of the parent (`ForkRegistry`).
    func reinitializeAfterFork() {
        Self.initialize(cond)
    }

    private static func initialize(_ cond: UnsafeMutablePointer<pthread_cond_t>) {
        var attr = pthread_condattr_t()
        pthread_condattr_init(&attr)
        #if !canImport(Darwin)
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)
        #endif
        let err = pthread_cond_init(cond, &attr)
        pthread_condattr_destroy(&attr)
        precondition(err == 0, "pthread_cond_init failed: \(err)")
    }

    deinit {
        pthread_cond_destroy(cond)
        cond.deinitialize(count: 1)
        cond.deallocate()
    }

    /// Waits until signalled (or spuriously woken). The caller holds `lock`.
    @inlinable
    func wait(_ lock: PthreadLock) {
        let err = pthread_cond_wait(cond, lock.mutex)
        precondition(err == 0, "pthread_cond_wait failed: \(err)")
    }

    /// Waits until signalled or until `deadline` (monotonic ns) passes; the caller holds
    /// `lock` and re-checks its predicate either way (spurious wake-ups happen).
    @inlinable
    func wait(_ lock: PthreadLock, until deadline: Int64) {
        var ts = timespec()
        ts.tv_sec = .init(deadline / 1_000_000_000)
        ts.tv_nsec = .init(deadline % 1_000_000_000)
        let err = pthread_cond_timedwait(cond, lock.mutex, &ts)
        precondition(err == 0 || err == ETIMEDOUT, "pthread_cond_timedwait failed: \(err)")
    }

    @inlinable
    func signal() {
        pthread_cond_signal(cond)
    }

    @inlinable
    func broadcast() {
        pthread_cond_broadcast(cond)
    }
}

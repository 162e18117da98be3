#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Keeps every stream of the process usable in a child made by `fork()`.
///
/// A child inherits memory, not threads. Without care, a child forked while another thread
/// is inside a stream's lock would inherit that lock held by a thread that does not exist
/// there (any use of the stream would hang), the stream's state half-changed, and waiter
/// counts and condition variables naming the parent's parked threads. So around every
/// fork (`pthread_atfork`, installed with the first stream):
/// - prepare (in the parent, on the forking thread): takes the registry's lock, then every
///   registered stream's lock, so no stream is mid-transition when the process is copied;
/// - parent: gives them back, in reverse;
/// - child (its only thread): re-makes every registered stream's mutex and conditions and
///   forgets the parent's waiters (`BoundedStream.forgetWaitersAfterFork`): the stream works
///   and holds exactly the items it held at the fork.
///
/// Deadlock freedom: a thread holding a stream's lock waits only for that lock (the stream
/// never runs caller code under it, except `forEachBuffered`'s body, which must not block),
/// and nobody takes the registry's lock while holding a stream's. Producers feeding a
/// stream from threads of the parent do not exist in the child: closing such streams there
/// is for whoever knows them (the readers and the Python binding do).
enum ForkRegistry {
    /// Guarded by `lock`; entries unregister in the stream's deinit, before it is freed.
    nonisolated(unsafe) private static var members: [ObjectIdentifier: ForkMember] = [:]
    nonisolated(unsafe) private static let lock = PthreadLock()
    /// Held between prepare and parent/child: the members locked for this fork.
    nonisolated(unsafe) private static var locked: [ForkMember] = []

    private static let installed: Void = {
        let err = pthread_atfork({ ForkRegistry.prepare() }, { ForkRegistry.parent() },
                                 { ForkRegistry.child() })
        precondition(err == 0, "pthread_atfork failed: \(err)")
    }()

    static func register(_ member: ForkMember, for owner: ObjectIdentifier) {
        _ = installed
        lock.lock()
        members[owner] = member
        lock.unlock()
    }

    static func unregister(_ owner: ObjectIdentifier) {
        lock.lock()
        members[owner] = nil
        lock.unlock()
    }

    private static func prepare() {
        lock.lock()
        locked = Array(members.values)
        for member in locked { member.lock.lock() }
    }

    private static func parent() {
        for member in locked.reversed() { member.lock.unlock() }
        locked = []
        lock.unlock()
    }

    private static func child() {
        for member in locked {
            member.lock.reinitializeAfterFork()
            for condition in member.conditions { condition.reinitializeAfterFork() }
            member.forgetWaiters()
        }
        locked = []
        lock.reinitializeAfterFork()
    }
}

/// What the fork handlers need of one stream: its lock, its conditions, and a way to
/// forget the parent's waiters (called in the child, with no other thread alive).
final class ForkMember {
    let lock: PthreadLock
    let conditions: [PthreadCondition]
    let forgetWaiters: () -> Void

    init(lock: PthreadLock, conditions: [PthreadCondition], forgetWaiters: @escaping () -> Void) {
        self.lock = lock
        self.conditions = conditions
        self.forgetWaiters = forgetWaiters
    }
}

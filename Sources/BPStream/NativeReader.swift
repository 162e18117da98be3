#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import BPStreamCore
import Synchronization

/// A native producer: one thread that reads a file descriptor and puts frames into a
/// stream (one per line, or one per read), waiting as the stream's policy says.
///
/// Lifecycle and ownership:
/// - `start` takes ownership of `fd`; the reader may replace it by its own open file
///   description of the same source (see `Access`); whichever it keeps, the thread closes
///   it when it ends, whatever the reason.
/// - The thread holds a strong reference to the reader (and so to the stream) until it ends.
/// - The thread ends at end of input (it closes the stream), on a read error, a line longer
///   than `maxLine` or a failed allocation (it closes the stream with the errno), when a put
///   finds the stream closed, or when `stopAndJoin` asks it to (the `stopping` flag, checked
///   before every read, and a byte on the wake channel, which every `poll` watches beside
///   `fd`): a silent source never keeps it alive.
/// - The thread never waits anywhere but in `poll` (source + wake channel) or in a put
///   (which the stream's close wakes): its reads never block (`Access`), except in the
///   documented fallback `.shared`.
/// - `stopAndJoin` returns only after the thread has ended; it closes the wake channel.
///   In a child process forked while the reader ran, the thread does not exist: it does
///   not join, it closes the child's copies of the fds and drops the thread's reference.
/// - Memory: the thread allocates only with malloc/realloc, every failure checked (a failed
///   allocation closes the stream with ENOMEM; Swift's own allocations trap instead). It
///   holds at most one read buffer, one batch of frames and one unfinished line of at most
///   `maxLine` bytes.
final class NativeReader: @unchecked Sendable {
    struct OSError: Error { let code: Int32 }

    /// How the thread reads its source so that a read never blocks where the wake channel
    /// cannot reach it. Another reader of the same open file description (the caller, a
    /// second `read_lines` of the same fd, a child process) may take the bytes `poll`
    /// announced before our read runs: a blocking read would then wait for the next bytes,
    /// maybe forever, and `stopAndJoin` with it. O_NONBLOCK on our dup is not an option: the
    /// flag belongs to the open file description, so the caller's fd would turn nonblocking
    /// too (and reads in the caller's code would start failing with EAGAIN).
    enum Access {
        /// Regular files, block devices, directories: a read never waits for data. The dup
        /// is kept, so the reader and the caller share the file offset, as with `os.dup`.
        case file
        /// Sockets: `recv(..., MSG_DONTWAIT)`, nonblocking per call; no flag changes.
        case socket
        /// Pipes and FIFOs: reads go through our OWN open file description, opened through
        /// /proc/self/fd/N with O_NONBLOCK (a pipe reopened there is the same pipe, checked
        /// by device and inode, and its O_NONBLOCK is ours alone); EAGAIN sends the thread
        /// back to `poll`. `poll` still watches the dup of the caller's description, whose
        /// end of input is the one the caller sees: Linux reports no POLLHUP to a FIFO
        /// description opened while the FIFO had no writer until a writer has come and gone,
        /// so polling our own would miss the end after a writer that left before we opened
        /// it, and reading first would end a FIFO the caller opened (O_NONBLOCK) before any
        /// writer came. What the caller may notice: our description is a reader of the pipe
        /// until the reader stops, so writers see EPIPE only then (as with the dup alone).
        case ownDescription
        /// The fallback: `poll`, then a plain `read` on the caller's description. For
        /// character devices (ttys, /dev/zero: see `prepare`), sources /proc cannot reopen
        /// (no /proc mounted, permissions) and anonymous inodes (eventfd, inotify). The
        /// residual case: if something else reads that description too, and it is in
        /// blocking mode, the read may block and `stopAndJoin` wait for the source's next
        /// bytes (or its end).
        case shared
    }

    private let stream: ItemStream
    /// The fd the thread reads, and the fd its `poll` watches: the same but for
    /// `.ownDescription`, where `pollFD` is the dup of the caller's description. The thread
    /// closes both when it ends.
    private let fd: Int32
    private let pollFD: Int32
    private let access: Access
    private let splitLines: Bool
    private let readSize: Int
    private let maxLine: Int
    /// [0] the thread polls, [1] `stopAndJoin` writes: an AF_UNIX socket pair, made with
    /// SOCK_CLOEXEC|SOCK_NONBLOCK in one call (pipe2 is not in Swift's Glibc module, and
    /// pipe + fcntl would leave the fds without FD_CLOEXEC for a moment, long enough for
    /// another thread's fork + exec to leak them into a program that outlives the reader).
    private let wake: (Int32, Int32)
    /// The process that started the thread: in any other (a fork child) it does not exist.
    private let creator: pid_t
    private var thread = pthread_t()
    /// Set once `stopAndJoin` has run (or the thread never started). One caller at a time.
    private var joined = false
    /// Set by `stopAndJoin` before it wakes the thread: the thread checks it before every
    /// read, so a source that always has data (a line that never ends) cannot keep it.
    private let stopping = Atomic<Bool>(false)
    /// Set by the thread just BEFORE it closes `fd` / drops its reference, so that in a fork
    /// child the worst a fork in between can do is leak (never double-close a reused fd
    /// number, never over-release).
    private let sourceReleased = Atomic<Bool>(false)
    private let threadReleased = Atomic<Bool>(false)

    /// Frames per put: the reader pays one stream lock per batch.
    private static let batchSize = 256

    private init(stream: ItemStream, fd: Int32, pollFD: Int32, access: Access, splitLines: Bool,
                 readSize: Int, maxLine: Int, wake: (Int32, Int32))
    {
        self.stream = stream
        self.fd = fd
        self.pollFD = pollFD
        self.access = access
        self.splitLines = splitLines
        self.readSize = readSize
        self.maxLine = maxLine
        self.wake = wake
        self.creator = getpid()
    }

    /// Starts the thread. Takes `fd` (closed on failure). `maxLine` applies to lines only.
    static func start(stream: ItemStream, fd: Int32, splitLines: Bool, readSize: Int, maxLine: Int)
        -> Result<NativeReader, OSError>
    {
        var pair: (Int32, Int32) = (-1, -1)
        let made = withUnsafeMutableBytes(of: &pair) {
            socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
                           | Int32(SOCK_NONBLOCK.rawValue),
                       0, $0.baseAddress!.assumingMemoryBound(to: Int32.self))
        }
        guard made == 0 else {
            let code = errno
            close(fd)
            return .failure(OSError(code: code))
        }
        let (source, access) = prepare(fd)
        let reader = NativeReader(stream: stream, fd: source, pollFD: fd, access: access,
                                  splitLines: splitLines, readSize: readSize, maxLine: maxLine,
                                  wake: pair)
        let context = Unmanaged.passRetained(reader).toOpaque()
        let err = pthread_create(&reader.thread, nil, { context in
            let reader = Unmanaged<NativeReader>.fromOpaque(context!).takeRetainedValue()
            reader.run()
            withExtendedLifetime(reader) {
                reader.threadReleased.store(true, ordering: .releasing)
            }  // the thread's reference goes here, after the flag
            return nil
        }, context)
        guard err == 0 else {
            Unmanaged<NativeReader>.fromOpaque(context).release()
            reader.joined = true  // no thread: deinit must not stop (close) the stream
            close(pair.0)
            close(pair.1)
            reader.closeSource()
            return .failure(OSError(code: err))
        }
        return .success(reader)
    }

    /// Chooses how to read `fd` (see `Access`); returns the fd to read, which may be a new
    /// one (`fd` stays open: it is the one to poll). Never changes a flag of the caller's
    /// open file description.
    private static func prepare(_ fd: Int32) -> (Int32, Access) {
        // FD_CLOEXEC is a flag of this fd number, not of the description: the caller's own fd
        // is untouched. bpstream's Python side passes an fd that has it already (os.dup).
        let fdFlags = fcntl(fd, F_GETFD)
        if fdFlags >= 0, fdFlags & FD_CLOEXEC == 0 { _ = fcntl(fd, F_SETFD, fdFlags | FD_CLOEXEC) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { return (fd, .shared) }  // the first read reports it
        switch info.st_mode & S_IFMT {
        case S_IFREG, S_IFBLK, S_IFDIR:
            return (fd, .file)
        case S_IFSOCK:
            return (fd, .socket)
        case S_IFIFO:
            let mode = fcntl(fd, F_GETFL)
            // Only a readable description: reopening a pipe's write end for reading would
            // read the pipe where a read of the caller's fd fails (EBADF).
            guard mode >= 0, mode & O_ACCMODE != O_WRONLY else { return (fd, .shared) }
            let own = open("/proc/self/fd/\(fd)", O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY)
            guard own >= 0 else { return (fd, .shared) }
            var reopened = stat()
            guard fstat(own, &reopened) == 0, reopened.st_dev == info.st_dev,
                  reopened.st_ino == info.st_ino
            else {  // not the same pipe after all: never read something else
                close(own)
                return (fd, .shared)
            }
            return (own, .ownDescription)
        default:
            // Character devices too: reopening one may open ANOTHER object (/dev/ptmx makes
            // a new pty pair, /dev/tty names whatever terminal is controlling, a tun or fuse
            // device a new instance) or have side effects (a serial line's DTR, an exclusive
            // device's EBUSY). Ttys are the residual case: see `.shared`.
            return (fd, .shared)
        }
    }

    /// Closes the stream, wakes the thread, joins it. Idempotent; one caller at a time.
    func stopAndJoin() {
        guard !joined else { return }
        joined = true
        guard getpid() == creator else { return abandonInForkChild() }
        stopping.store(true, ordering: .releasing)
        stream.close()
        var byte: UInt8 = 1
        _ = write(wake.1, &byte, 1)
        pthread_join(thread, nil)
        close(wake.0)
        close(wake.1)
    }

    /// `stopAndJoin` in a child forked while the thread ran: the child has no such thread
    /// (pthread_join would wait forever on its copied descriptor). Does here what the thread
    /// would have done on its way out: closes the stream (plainly: what was buffered at the
    /// fork stays readable, then consumers stop), closes the child's copies of the source
    /// and the wake channel, and drops the thread's reference. The thread's own buffers
    /// (copied with the parent's memory) are unreachable here and are not freed.
    private func abandonInForkChild() {
        stream.close()
        if !sourceReleased.load(ordering: .acquiring) { closeSource() }
        close(wake.0)
        close(wake.1)
        if !threadReleased.load(ordering: .acquiring) {
            // The caller of stopAndJoin holds a reference of its own: this is not the last.
            Unmanaged.passUnretained(self).release()
        }
    }

    deinit {
        // The thread holds a reference until it ends and the caller's goes only after
        // bps_reader_stop: by now the reader has been stopped, unless start failed.
        stopAndJoin()
    }

    // MARK: - The thread

    /// Closes the source's fds (one, or two for `.ownDescription`).
    private func closeSource() {
        close(fd)
        if pollFD != fd { close(pollFD) }
    }

    private func run() {
        defer {
            sourceReleased.store(true, ordering: .releasing)
            closeSource()
        }
        var work = Work(batchSize: Self.batchSize, readSize: readSize)
        defer { work.deallocate() }
        guard work.isAllocated else { return fail(ENOMEM) }
        let buffer: UnsafeMutableRawPointer = work.buffer
        var polls = (pollfd(fd: pollFD, events: Int16(POLLIN), revents: 0),
                     pollfd(fd: wake.0, events: Int16(POLLIN), revents: 0))
        // .shared must poll before every read (a read there may block). The others poll
        // first (a regular file never: it is always ready), then read until EAGAIN, then
        // poll again: one poll per burst, not per read.
        let alwaysPoll = access == .shared
        var mustPoll = access != .file

        while true {
            if stopping.load(ordering: .acquiring) { return }
            if mustPoll {
                let ready = withUnsafeMutableBytes(of: &polls) {
                    poll($0.baseAddress!.assumingMemoryBound(to: pollfd.self), 2, -1)
                }
                if ready < 0 {
                    if errno == EINTR { continue }
                    return fail(errno)
                }
                if polls.1.revents != 0 { return }  // stopAndJoin
                mustPoll = alwaysPoll
            }
            let count = access == .socket
                ? recv(fd, buffer, readSize, Int32(MSG_DONTWAIT))
                : read(fd, buffer, readSize)
            if count < 0 {
                let code = errno
                if code == EINTR { continue }
                if code == EAGAIN || code == EWOULDBLOCK {
                    mustPoll = true  // someone else took the bytes, or none yet
                    continue
                }
                // Everything read before the error goes first (an unfinished last line
                // too), then the error.
                finishPartialLine(&work)
                guard deliver(&work) else { return }
                return fail(code)
            }
            if count == 0 {  // end of input
                finishPartialLine(&work)
                guard deliver(&work) else { return }
                stream.close()
                return
            }
            if !splitLines {
                guard let frame = Frame.make(copying: buffer, length: count) else { return fail(ENOMEM) }
                work.append(frame)
                guard deliver(&work) else { return }
                continue
            }
            // Whole lines inside the buffer become frames made together at the end of the
            // batch (`work.lines` collects their ranges: the short ones share one slab); the
            // line completing `work.partial` becomes a frame of its own, handed over without
            // a copy. Frames keep the order of the input: `partial` is only ever completed by
            // the first newline of a read, when no range is collected yet.
            var start = 0
            while start < count,
                  let newline = memchr(buffer + start, 0x0A, count - start)
            {
                let end = buffer.distance(to: newline) + 1
                guard work.partial.count + (end - start) <= maxLine else {
                    return lineTooLong(&work)
                }
                if work.partial.count == 0 {
                    work.lines[work.lineCount] = (UnsafeRawPointer(buffer + start), end - start)
                    work.lineCount += 1
                } else {
                    guard work.partial.append(buffer + start, end - start, limit: maxLine) else {
                        return outOfMemory(&work)
                    }
                    work.append(work.partial.takeFrame())
                }
                start = end
                if work.batchCount + work.lineCount >= Self.batchSize {
                    guard flush(&work), deliver(&work) else { return }
                }
            }
            guard flush(&work) else { return }
            if start < count {
                // The unfinished line is refused as soon as it is too long, not when its
                // newline comes (it may never come: /dev/zero).
                guard work.partial.count + (count - start) <= maxLine else {
                    return lineTooLong(&work)
                }
                guard work.partial.append(buffer + start, count - start, limit: maxLine) else {
                    return outOfMemory(&work)
                }
            }
            guard deliver(&work) else { return }
        }
    }

    /// Turns the collected line ranges into frames (one slab) at the end of the batch.
    private func flush(_ work: inout Work) -> Bool {
        defer { work.lineCount = 0 }
        let ranges = UnsafeBufferPointer(start: work.lines, count: work.lineCount)
        guard Frame.make(copying: ranges, { work.append($0) }) else {
            fail(ENOMEM)
            return false
        }
        return true
    }

    /// At the end of input (or before an error): the unfinished last line becomes a frame.
    /// The batch has room: it is delivered whenever it fills.
    private func finishPartialLine(_ work: inout Work) {
        if work.partial.count > 0 { work.append(work.partial.takeFrame()) }
    }

    /// A line longer than `maxLine`: every line before it goes first, then the error.
    private func lineTooLong(_ work: inout Work) {
        work.partial.discard()
        guard flush(&work), deliver(&work) else { return }
        fail(EMSGSIZE, "line longer than max_line (\(maxLine) bytes)")
    }

    /// The unfinished line could not grow: its memory goes first (so the error can be
    /// reported), every line before it is delivered, then ENOMEM.
    private func outOfMemory(_ work: inout Work) {
        let length = work.partial.count
        work.partial.discard()
        guard flush(&work), deliver(&work) else { return }
        fail(ENOMEM, "out of memory buffering a line of more than \(length) bytes (max_line \(maxLine))")
    }

    /// Puts the batch (waiting as the policy says) and empties it; frames the stream did not
    /// take are freed. Returns false when the stream is closed (or could not grow, and is
    /// now closed with ENOMEM): the thread must end.
    private func deliver(_ work: inout Work) -> Bool {
        guard work.batchCount > 0 else { return true }
        var observer = NoWaitObserver()
        let frames = UnsafeBufferPointer(start: work.batch, count: work.batchCount)
        let (taken, outcome) = stream.put(contentsOf: frames, timeoutNanoseconds: -1, observer: &observer)
        for item in frames[taken...] { Frame.free(item) }
        work.batchCount = 0
        if outcome == .noMemory {  // the stream could not grow: end it with ENOMEM
            fail(ENOMEM)
            return false
        }
        return outcome != .closed && outcome != .cancelled
    }

    private func fail(_ code: Int32, _ message: String? = nil) {
        stream.close(failure: ProducerFailure(code: code, message: message ?? String(cString: strerror(code))))
    }
}

/// The thread's memory, all of it malloc'd (a failed allocation is a value, not a trap) and
/// of fixed size but for `partial`, which `maxLine` bounds.
private struct Work {
    let buffer: UnsafeMutableRawPointer!
    /// Frames made and not yet put, in order: `batch[0..<batchCount]`.
    let batch: UnsafeMutablePointer<UnsafeMutableRawPointer>!
    var batchCount = 0
    /// Whole lines found in `buffer`, not yet made into frames: `lines[0..<lineCount]`.
    let lines: UnsafeMutablePointer<(UnsafeRawPointer?, Int)>!
    var lineCount = 0
    /// The line not yet ended by '\n'.
    var partial = LineBuffer()

    init(batchSize: Int, readSize: Int) {
        buffer = malloc(readSize)
        batch = malloc(batchSize * MemoryLayout<UnsafeMutableRawPointer>.stride)?
            .bindMemory(to: UnsafeMutableRawPointer.self, capacity: batchSize)
        lines = malloc(batchSize * MemoryLayout<(UnsafeRawPointer?, Int)>.stride)?
            .bindMemory(to: (UnsafeRawPointer?, Int).self, capacity: batchSize)
    }

    var isAllocated: Bool { buffer != nil && batch != nil && lines != nil }

    /// Appends a frame to the batch. The caller delivers before it holds `batchSize`.
    mutating func append(_ frame: UnsafeMutableRawPointer) {
        batch[batchCount] = frame
        batchCount += 1
    }

    /// Frees everything, frames not yet put included.
    mutating func deallocate() {
        if let batch {
            for item in UnsafeBufferPointer(start: batch, count: batchCount) { Frame.free(item) }
        }
        batchCount = 0
        partial.discard()
        free(buffer)
        free(batch)
        free(lines)
    }
}

/// An unfinished line, in a block laid out as a standalone frame (`Frame.standaloneHeader`
/// bytes, then the line) so the finished line is handed over as a frame without a copy.
/// Grows by realloc (doubling, but never beyond `limit`, the reader's `maxLine`: the caller
/// refuses a line that would not fit).
private struct LineBuffer {
    private var block: UnsafeMutableRawPointer? = nil
    private var capacity = 0
    private(set) var count = 0

    /// Appends `length` bytes (`count + length <= limit`); false if realloc failed (the
    /// buffer is unchanged).
    mutating func append(_ data: UnsafeRawPointer, _ length: Int, limit: Int) -> Bool {
        let needed = count + length
        if needed > capacity {
            let grown = Swift.max(needed, Swift.min(Swift.max(capacity * 2, 256), limit))
            guard let bigger = realloc(block, Frame.standaloneHeader + grown) else { return false }
            block = bigger
            capacity = grown
        }
        (block! + Frame.standaloneHeader + count).copyMemory(from: data, byteCount: length)
        count = needed
        return true
    }

    /// The line as a frame item (the buffer is empty afterwards). Gives back the slack of a
    /// large block first: the frame may stay in the stream a while.
    mutating func takeFrame() -> UnsafeMutableRawPointer {
        var taken = block!
        if capacity - count > 4096, let fitted = realloc(taken, Frame.standaloneHeader + count) {
            taken = fitted
        }
        let item = Frame.adopt(taken, length: count)
        (block, capacity, count) = (nil, 0, 0)
        return item
    }

    mutating func discard() {
        free(block)
        (block, capacity, count) = (nil, 0, 0)
    }
}

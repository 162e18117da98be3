#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import BPStreamCore

/// A native producer: one thread that reads a file descriptor and puts frames into a
/// stream (one per line, or one per read), waiting as the stream's policy says.
///
/// Lifecycle and ownership:
/// - `start` takes ownership of `fd`; the thread closes it when it ends, whatever the reason.
/// - The thread holds a strong reference to the reader (and so to the stream) until it ends.
/// - The thread ends at end of input (it closes the stream), on a read error (it closes the
///   stream with the errno), when a put finds the stream closed, or when `stopAndJoin`
///   writes to the wake pipe, which every `poll` watches alongside `fd`: a silent pipe
///   never keeps it alive.
/// - `stopAndJoin` returns only after the thread has ended; it closes the wake pipe.
final class NativeReader: @unchecked Sendable {
    struct OSError: Error { let code: Int32 }

    private let stream: ItemStream
    private let fd: Int32
    private let splitLines: Bool
    private let readSize: Int
    /// [read end, write end]: a byte written to the write end wakes the thread's poll.
    private var wakePipe: (Int32, Int32) = (-1, -1)
    private var thread = pthread_t()
    private var joined = false

    /// Frames per put: the reader pays one stream lock per batch.
    private static let batchSize = 256

    private init(stream: ItemStream, fd: Int32, splitLines: Bool, readSize: Int) {
        self.stream = stream
        self.fd = fd
        self.splitLines = splitLines
        self.readSize = readSize
    }

    static func start(stream: ItemStream, fd: Int32, splitLines: Bool, readSize: Int)
        -> Result<NativeReader, OSError>
    {
        let reader = NativeReader(stream: stream, fd: fd, splitLines: splitLines, readSize: readSize)
        var fds: [Int32] = [-1, -1]
        // pipe2 needs _GNU_SOURCE, which Swift's Glibc module does not define.
        guard pipe(&fds) == 0 else {
            let code = errno
            close(fd)
            reader.joined = true  // no thread: deinit must not stop (close) the stream
            return .failure(OSError(code: code))
        }
        for end in fds {
            _ = fcntl(end, F_SETFD, FD_CLOEXEC)
            _ = fcntl(end, F_SETFL, fcntl(end, F_GETFL) | O_NONBLOCK)
        }
        reader.wakePipe = (fds[0], fds[1])
        let context = Unmanaged.passRetained(reader).toOpaque()
        let err = pthread_create(&reader.thread, nil, { context in
            let reader = Unmanaged<NativeReader>.fromOpaque(context!).takeRetainedValue()
            reader.run()
            return nil
        }, context)
        guard err == 0 else {
            Unmanaged<NativeReader>.fromOpaque(context).release()
            close(fds[0])
            close(fds[1])
            close(fd)
            reader.joined = true
            return .failure(OSError(code: err))
        }
        return .success(reader)
    }

    /// Closes the stream, wakes the thread, joins it. Idempotent; one caller at a time.
    func stopAndJoin() {
        guard !joined else { return }
        stream.close()
        var byte: UInt8 = 1
        _ = write(wakePipe.1, &byte, 1)
        pthread_join(thread, nil)
        joined = true
        close(wakePipe.0)
        close(wakePipe.1)
    }

    deinit {
        stopAndJoin()
    }

    // MARK: - The thread

    private func run() {
        defer { close(fd) }
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: readSize, alignment: 16)
        defer { buffer.deallocate() }
        var batch: [UnsafeMutableRawPointer] = []
        batch.reserveCapacity(Self.batchSize)
        var partialLine: [UInt8] = []  // a line not yet ended by '\n'
        var lines: [(UnsafeRawPointer?, Int)] = []
        lines.reserveCapacity(Self.batchSize)
        var polls = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0),
                     pollfd(fd: wakePipe.0, events: Int16(POLLIN), revents: 0)]
        defer { for item in batch { Frame.free(item) } }

        while true {
            if poll(&polls, 2, -1) < 0 {
                if errno == EINTR { continue }
                return fail(errno)
            }
            if polls[1].revents != 0 { return }  // stopAndJoin
            let count = read(fd, buffer, readSize)
            if count < 0 {
                if errno == EINTR || errno == EAGAIN { continue }
                let code = errno
                // Everything read before the error goes first (an unfinished last line
                // too), then the error.
                if !partialLine.isEmpty, !append(partialLine, to: &batch) { return }
                guard deliver(&batch) else { return }
                return fail(code)
            }
            if count == 0 {  // end of input
                if !partialLine.isEmpty, !append(partialLine, to: &batch) { return }
                guard deliver(&batch) else { return }
                stream.close()
                return
            }
            if !splitLines {
                guard let frame = Frame.make(copying: buffer, length: count) else { return fail(ENOMEM) }
                batch.append(frame)
                guard deliver(&batch) else { return }
                continue
            }
            // Whole lines inside the buffer become frames made together at the end of the
            // batch (`lines` collects their ranges: the short ones share one slab); a line
            // completing `partialLine` is a standalone frame. Frames keep the order of the input.
            var start = 0
            while start < count,
                  let newline = memchr(buffer + start, 0x0A, count - start)
            {
                let end = buffer.distance(to: newline) + 1
                if partialLine.isEmpty {
                    lines.append((UnsafeRawPointer(buffer + start), end - start))
                } else {
                    partialLine.append(contentsOf: UnsafeRawBufferPointer(start: buffer + start, count: end - start))
                    guard append(partialLine, to: &batch) else { return }
                    partialLine.removeAll(keepingCapacity: true)
                }
                start = end
                if batch.count + lines.count >= Self.batchSize {
                    guard flush(&lines, into: &batch), deliver(&batch) else { return }
                }
            }
            guard flush(&lines, into: &batch) else { return }
            if start < count {
                partialLine.append(contentsOf: UnsafeRawBufferPointer(start: buffer + start, count: count - start))
            }
            guard deliver(&batch) else { return }
        }
    }

    /// Turns the collected line ranges into frames (one slab) at the end of the batch.
    private func flush(_ lines: inout [(UnsafeRawPointer?, Int)], into batch: inout [UnsafeMutableRawPointer]) -> Bool {
        defer { lines.removeAll(keepingCapacity: true) }
        guard Frame.make(copying: lines, { batch.append($0) }) else {
            fail(ENOMEM)
            return false
        }
        return true
    }

    /// Appends one frame holding `bytes`; false (after closing the stream with ENOMEM)
    /// if it could not be allocated: the thread must end, nothing is dropped silently.
    private func append(_ bytes: [UInt8], to batch: inout [UnsafeMutableRawPointer]) -> Bool {
        let frame = bytes.withUnsafeBytes { Frame.make(copying: $0.baseAddress, length: $0.count) }
        guard let frame else {
            fail(ENOMEM)
            return false
        }
        batch.append(frame)
        return true
    }

    /// Puts the batch (waiting as the policy says) and empties it; frames the stream did not
    /// take are freed. Returns false when the stream is closed (or could not grow, and is
    /// now closed with ENOMEM): the thread must end.
    private func deliver(_ batch: inout [UnsafeMutableRawPointer]) -> Bool {
        guard !batch.isEmpty else { return true }
        var observer = NoWaitObserver()
        let (taken, outcome) = batch.withUnsafeBufferPointer { frames in
            stream.put(contentsOf: frames, timeoutNanoseconds: -1, observer: &observer)
        }
        for item in batch[taken...] { Frame.free(item) }
        batch.removeAll(keepingCapacity: true)
        if outcome == .noMemory {  // the stream could not grow: end it with ENOMEM
            fail(ENOMEM)
            return false
        }
        return outcome != .closed && outcome != .cancelled
    }

    private func fail(_ code: Int32) {
        let message = String(cString: strerror(code))
        stream.close(failure: ProducerFailure(code: code, message: message))
    }
}

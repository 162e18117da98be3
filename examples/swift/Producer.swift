import BPStreamCore

#if canImport(Glibc)
import Glibc
#endif

/// Starts a thread that puts 1...count into `stream`, then closes it.
///
/// (In its own file: code in main.swift runs on the main actor, and a thread body must not.)
func startProducer(_ stream: BoundedStream<Int>, count: Int) -> pthread_t {
    final class Job {
        let stream: BoundedStream<Int>
        let count: Int
        init(_ stream: BoundedStream<Int>, _ count: Int) { (self.stream, self.count) = (stream, count) }
    }
    var thread = pthread_t()
    let context = Unmanaged.passRetained(Job(stream, count)).toOpaque()
    pthread_create(&thread, nil, { context in
        let job = Unmanaged<Job>.fromOpaque(context!).takeRetainedValue()
        for number in 1...job.count {
            try! job.stream.put(number)  // waits while the stream is full: backpressure
        }
        job.stream.close()  // consumers drain what is left, then their loop ends
        return nil
    }, context)
    return thread
}

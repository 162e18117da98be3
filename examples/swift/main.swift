// A Swift producer and consumer on one BoundedStream: the same primitive, natively.
//
//     swift run swift-producer-consumer
//
// A producer thread puts 100,000 numbers into a stream of 64 (block: it waits whenever
// the consumer falls behind), then closes it; the main thread iterates until the stream
// is closed and drained, and prints the stream's exact accounting.
import BPStreamCore

#if canImport(Glibc)
import Glibc
#endif

let stream = try BoundedStream<Int>(capacity: 64, policy: .block)
let total = 100_000

let producer = startProducer(stream, count: total)

var sum = 0
var count = 0
for number in stream {
    sum += number
    count += 1
}
pthread_join(producer, nil)

let stats = stream.stats()
print("consumed \(count) numbers, sum \(sum) (expected \(total * (total + 1) / 2))")
print("produced \(stats.produced), consumed \(stats.consumed), dropped \(stats.dropped),"
      + " peak depth \(stats.peakDepth) of 64, producer waited \(stats.producerWaits) times;"
      + " identity holds: \(stats.identityHolds)")

// A latest-value stream: a put into a full drop_oldest stream evicts the oldest item.
let latest = try BoundedStream<String>(capacity: 2, policy: .dropOldest)
for reading in ["20.1 C", "20.4 C", "20.9 C"] { try latest.put(reading) }
latest.close()
print("drop_oldest keeps the newest:", Array(latest), "evicted:", latest.stats().droppedEvicted)
exit(sum == total * (total + 1) / 2 && stats.identityHolds ? 0 : 1)

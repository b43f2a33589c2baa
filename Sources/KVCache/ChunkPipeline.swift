import Dispatch
import Synchronization
import WStoreCore

/// The missing chunks of one ``KVStore/store(tokens:model:salt:kv:)``, encoded one ahead of
/// the chunk being written, in `missing` order.
///
/// The writer asks for chunk i's value when its turn comes; it then encodes the tensors of
/// chunk i that the chunk's own thread has not taken yet, waits for the ones it has, and
/// only then starts chunk i + 1 on a thread of its own, to encode while chunk i is written.
/// So at most one chunk's thread runs beside the writer: the first chunk of a store encodes
/// on two threads, and when encoding is slower than writing, the writer spends the rest of
/// each turn on the next chunk instead of sleeping.
final class ChunkPipeline {
    private let missing: [Int]
    private let startOnAThread: Bool
    private let make: (Int) -> ChunkEncoding
    private var running: [Int: ChunkEncoding] = [:]
    /// The values encoded so far and not released, by chunk index.
    private(set) var encoded: [Int: KVChunk.Encoded] = [:]

    /// `make(i)` gives chunk `i`'s encoding, not started; with `startOnAThread` false
    /// (chunks too small to be worth a thread) each chunk encodes on the writer when asked for.
    init(missing: [Int], startOnAThread: Bool, make: @escaping (Int) -> ChunkEncoding) {
        self.missing = missing
        self.startOnAThread = startOnAThread
        self.make = make
    }

    /// Starts encoding the first missing chunk.
    func start() { if let first = missing.first { launch(first) } }

    private func launch(_ i: Int) {
        let job = make(i)
        if startOnAThread { job.start() }
        running[i] = job
    }

    /// Chunk `i`'s value: the writer encodes what is left of it and waits for the rest
    /// (started now if it was not), then starts the next missing chunk. `nil` when `i`
    /// was not missing.
    func value(_ i: Int) throws -> KVChunk.Encoded? {
        if let v = encoded[i] { return v }
        guard let at = missing.firstIndex(of: i) else { return nil }
        let job = running.removeValue(forKey: i) ?? make(i)
        let v = try job.value()
        encoded[i] = v
        if at + 1 < missing.count, encoded[missing[at + 1]] == nil, running[missing[at + 1]] == nil {
            launch(missing[at + 1])
        }
        return v
    }

    /// Lets chunk `i`'s value go once it is written, so its buffers return to the scratch
    /// pool for the chunks after it; should the transaction run again, it encodes again.
    func release(_ i: Int) { encoded[i] = nil }
}

/// One chunk's encoding, shared by the thread that starts it and the writer that waits for
/// it. The chunk's keys and values are made once, on the starting thread (or on the writer,
/// when it was never started); then each thread takes the next tensor nobody has taken, so
/// the writer encodes part of the chunk instead of sleeping while the rest is encoded.
final class ChunkEncoding: @unchecked Sendable {
    private let key: UInt64
    private let codec: KVCodec
    private let kivi: KIVIOptions
    private let threads: Int
    private let makeRows: @Sendable () throws -> KVCacheData

    // Written by whichever thread makes the rows, before `made` is signalled; read by the
    // others only after waiting for `made`.
    private var kv: KVCacheData?
    private var tensors: [KVTensor] = []
    private var makeError: (any Error)?
    private var records = UnsafeMutableBufferPointer<(record: EncodedRecord, source: [UInt8])?>(start: nil, count: 0)
    private let made = DispatchSemaphore(value: 0)

    /// The next tensor to take, and the tensors not yet encoded; the thread that encodes
    /// the last one signals `finished`. Record `i` is written by the one thread that took
    /// tensor `i` before it counts it done, and read only after `finished`.
    private let next = Atomic<Int>(0)
    private let left = Atomic<Int>(0)
    private let finished = DispatchSemaphore(value: 0)
    private let firstError = Mutex<(any Error)?>(nil)

    /// The writer's side only: whether a thread was started, and the thread.
    private var started = false
    private var worker: Background<Void>?

    /// A chunk bound to `key` whose keys and values `rows` makes, to encode with `codec`
    /// on `threads` threads (and the writer's).
    init(
        key: UInt64, codec: KVCodec, kivi: KIVIOptions, threads: Int,
        rows: @escaping @Sendable () throws -> KVCacheData
    ) {
        self.key = key
        self.codec = codec
        self.kivi = kivi
        self.threads = max(1, threads)
        self.makeRows = rows
    }

    deinit {
        records.deinitialize()
        records.deallocate()
    }

    /// Starts making and encoding the chunk on a thread of its own.
    func start() {
        guard !started else { return }
        started = true
        worker = Background { [self] in run() }
    }

    /// The chunk, encoded: waits for its rows (made now, on this thread, if it was never
    /// started), encodes the tensors nobody has taken, then waits for the ones others took.
    /// - Throws: what making the rows or encoding a tensor threw (the first error).
    func value() throws -> KVChunk.Encoded {
        if !started {
            started = true
            run()
        }
        made.wait()
        made.signal()
        if let makeError { throw makeError }
        work()
        finished.wait()
        finished.signal()
        if let error = firstError.withLock({ $0 }) { throw error }
        return KVChunk.assemble(kv!, records: records.map { $0! }, key: key, codec: codec, kivi: kivi)
    }

    /// Makes the rows, then encodes tensors on `threads` threads until none is left.
    private func run() {
        do {
            let rows = try makeRows()
            tensors = rows.layers.flatMap { [$0.keys, $0.values] }
            records = .allocate(capacity: tensors.count)
            records.initialize(repeating: nil)
            left.store(tensors.count, ordering: .relaxed)
            kv = rows
        } catch {
            makeError = error
        }
        made.signal()
        guard makeError == nil else { return }
        if tensors.isEmpty { finished.signal() }  // nothing to count down
        if threads > 1 {
            try? parallelFor(threads, threads: threads) { _, _ in self.work() }
        } else {
            work()
        }
    }

    /// Encodes tensors nobody has taken until none is left.
    private func work() {
        while true {
            let i = next.add(1, ordering: .relaxed).oldValue
            guard i < tensors.count else { return }
            do {
                records[i] = try KVChunk.encodeRecord(tensors, i, key: key, codec: codec, kivi: kivi)
            } catch {
                firstError.withLock { if $0 == nil { $0 = error } }
            }
            if left.subtract(1, ordering: .acquiringAndReleasing).newValue == 0 { finished.signal() }
        }
    }
}

import ArgumentParser
import Foundation
import KVCache
import WStoreCore
import WStoreReplay
import WeightStore

/// `wstore bench kv`: prefix-cache hit rates of a request trace, and KV bytes through a real store.
struct BenchKV: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kv",
        abstract:
            "Replay a Mooncake-format request trace: prefix-block and token hit rates; with --model-shape, put/get GB/s beside memcpy.",
        discussion: """
            A block hits while it is cached and every earlier block of its request hit. Two \
            policies are replayed: plain LRU over blocks, and the store's own (least recently \
            used leaf first). With --model-shape, the first --requests requests are also replayed \
            through a real KV store holding generated KV bytes of that shape, one chunk per block; \
            its hits are checked against the leaves-first replay of the same requests.
            """)

    @Option(help: "A Mooncake-format trace (JSON lines with timestamp, input_length, output_length, hash_ids).")
    var trace: String?
    @Option(help: "Without --trace: generate a trace of this many requests (and say so).") var generate = 2000
    @Option(help: "Tokens per block of the trace.") var blockTokens = 512
    @Option(help: "Cache capacity in blocks, comma-separated; 0 is unbounded.") var capacityBlocks = "0,20000,5000,1000"
    @Option(
        help: "layers=32,kv_heads=8,head_dim=128,dtype=bf16: also move real KV bytes of this shape through a store.")
    var modelShape: String?
    @Option(help: "With --model-shape: requests replayed through the store.") var requests = 16
    @Option(help: "With --model-shape: the store's codec.") var codec: KVCodec = .lossless
    @Option(help: "With --model-shape: threads that encode and decode a chunk.") var threads = System
        .activeProcessorCount
    @Option(help: "With --model-shape: the store directory (default: a temporary one, removed after).") var store:
        String?
    @Option(
        help:
            "With --model-shape: synced (every put commits durably) or deferred (puts commit without a sync; format-spec/KV.md §9)."
    )
    var durability: KVStore.Durability = .synced
    @Option(
        help:
            "Replay over this many engine nodes (request i on node i mod N), each with its own local tier of --capacity-blocks blocks (LRU), all sharing one remote tier."
    )
    var nodes: Int?
    @Option(
        help:
            "The shared remote tier for --nodes: redis://[user:password@]host:port; repeat it for the seeds of a cluster. Without it the nodes share an unbounded in-memory tier."
    )
    var remote: [String] = []
    @Flag(help: "Print JSON.") var json = false

    struct Shape: Codable { var layers: Int, kvHeads: Int, headDim: Int, dtype: String }

    struct StoreReport: Codable {
        var shape: Shape, codec: String, requests: Int, capacityBlocks: Int
        var hitBlocks: Int, replayHitBlocks: Int
        var putBytes: Int, putSeconds: Double, getBytes: Int, getSeconds: Double, memcpyGBps: Double
        var storedBytes: Int, rawBytes: Int
        /// Reconstruction error of one block through the codec (0 for lossless).
        var maxAbsError: Double, relativeRMSError: Double
        var durability: String
        /// Peers: the codec's encode alone of the very chunks the puts wrote, from the same
        /// request buffers; the codec's encode of one block again and again (its bytes stay
        /// in the CPU caches); a plain file write + fsync of one block and pread of it.
        var encodeGBps: Double, encodeOneBlockGBps: Double, fileWriteSyncGBps: Double, filePreadGBps: Double
        /// Process CPU seconds (every thread) during the puts and during the encode peer, and
        /// the encode peer's wall seconds: CPU over wall, the cores each kept busy; CPU over
        /// bytes, the work a byte took (encode, and for the put the copy into the page cache).
        var putCPUSeconds: Double, encodeCPUSeconds: Double, encodeSeconds: Double
        var putGBps: Double { putSeconds > 0 ? Double(putBytes) / putSeconds / 1e9 : 0 }
        var getGBps: Double { getSeconds > 0 ? Double(getBytes) / getSeconds / 1e9 : 0 }
        enum CodingKeys: String, CodingKey {
            case shape, codec, requests, capacityBlocks, hitBlocks, replayHitBlocks, putBytes, putSeconds, getBytes,
                getSeconds, memcpyGBps, storedBytes, rawBytes, maxAbsError, relativeRMSError, durability, encodeGBps,
                encodeOneBlockGBps, fileWriteSyncGBps, filePreadGBps, putCPUSeconds, encodeCPUSeconds, encodeSeconds
        }
    }

    func capacities() throws -> [Int] {
        try capacityBlocks.split(separator: ",").map {
            guard let n = Int($0.trimmingCharacters(in: .whitespaces)), n >= 0 else {
                throw ValidationError("--capacity-blocks takes non-negative integers, got \($0)")
            }
            return n
        }
    }

    func validate() throws {
        guard blockTokens > 0, requests > 0, threads > 0, generate > 0 else {
            throw ValidationError("--block-tokens, --requests, --threads and --generate must be positive")
        }
        guard !(try capacities()).isEmpty else { throw ValidationError("--capacity-blocks is empty") }
        if let modelShape { _ = try parseShape(modelShape) }
        if let nodes, nodes < 1 { throw ValidationError("--nodes must be positive") }
        if !remote.isEmpty && nodes == nil { throw ValidationError("--remote needs --nodes") }
    }

    func parseShape(_ text: String) throws -> (Shape, DType) {
        let kv = try parseKeyValues(text, option: "--model-shape")
        func int(_ k: String) throws -> Int {
            guard let s = kv[k], let n = Int(s), n > 0 else {
                throw ValidationError("--model-shape needs \(k)=N (positive)")
            }
            return n
        }
        let name = kv["dtype"] ?? "bf16"
        guard let dt = DType(safetensorsName: name.uppercased()), KVTensor.supportedDTypes.contains(dt) else {
            throw ValidationError("--model-shape dtype must be f16, bf16 or f32")
        }
        for k in kv.keys where !["layers", "kv_heads", "head_dim", "dtype"].contains(k) {
            throw ValidationError("--model-shape: unknown key \(k) (layers, kv_heads, head_dim, dtype)")
        }
        return (
            Shape(layers: try int("layers"), kvHeads: try int("kv_heads"), headDim: try int("head_dim"), dtype: name),
            dt
        )
    }

    func run() throws {
        let label: String
        let reqs: [TraceRequest]
        if let trace {
            reqs = try MooncakeTrace.read(path: trace)
            label = trace
        } else {
            reqs = BenchKV.generatedTrace(requests: generate, seed: 1, blockTokens: blockTokens)
            label = "generated trace (\(generate) requests; no --trace given)"
        }
        guard !reqs.isEmpty else { throw ValidationError("the trace holds no requests") }
        if let nodes { return try runNodes(reqs, label: label, nodes: nodes) }
        var results: [PrefixReplay.Result] = []
        for cap in try capacities() {
            for policy in PrefixReplay.Policy.allCases {
                results.append(PrefixReplay.run(reqs, capacityBlocks: cap, blockTokens: blockTokens, policy: policy))
            }
        }
        var storeReport: StoreReport?
        if let modelShape {
            storeReport = try replayThroughStore(
                Array(reqs.prefix(requests)), shape: try parseShape(modelShape),
                capacity: try capacities()[0])
        }
        if json {
            struct Report: Codable {
                var trace: String, requests: Int, blockTokens: Int
                var replays: [Row]
                var store: StoreReport?
            }
            struct Row: Codable {
                var policy: String, capacityBlocks: Int, blocks: Int, hitBlocks: Int, tokens: Int, hitTokens: Int
                var evictions: Int, blockHitRate: Double, tokenHitRate: Double
            }
            let rows = results.map {
                Row(
                    policy: $0.policy.rawValue, capacityBlocks: $0.capacityBlocks, blocks: $0.blocks,
                    hitBlocks: $0.hitBlocks,
                    tokens: $0.tokens, hitTokens: $0.hitTokens, evictions: $0.evictions, blockHitRate: $0.blockHitRate,
                    tokenHitRate: $0.tokenHitRate)
            }
            try JSONOutput.print(
                Report(
                    trace: label, requests: reqs.count, blockTokens: blockTokens, replays: rows,
                    store: storeReport))
            return
        }
        print(
            "trace: \(label): \(reqs.count) requests, \(results[0].blocks) blocks of \(blockTokens) tokens, \(results[0].tokens) prompt tokens"
        )
        print(
            TextTable(
                ["capacity (blocks)", "policy", "block hit rate", "token hit rate", "hit blocks", "evictions"],
                results.map { r in
                    [
                        r.capacityBlocks == 0 ? "unbounded" : String(r.capacityBlocks), r.policy.rawValue,
                        String(format: "%.2f%%", 100 * r.blockHitRate), String(format: "%.2f%%", 100 * r.tokenHitRate),
                        String(r.hitBlocks), String(r.evictions),
                    ]
                }
            ).render())
        if let s = storeReport {
            print()
            print(
                "store replay: first \(s.requests) requests, layers=\(s.shape.layers) kv_heads=\(s.shape.kvHeads) head_dim=\(s.shape.headDim) \(s.shape.dtype), codec \(s.codec), \(s.durability) commits, capacity \(s.capacityBlocks == 0 ? "unbounded" : "\(s.capacityBlocks) blocks")"
            )
            print(
                TextTable(
                    ["path", "GB/s", "x memcpy", "bytes"],
                    [
                        ["memcpy (baseline)", String(format: "%.2f", s.memcpyGBps), "1.00", "-"],
                        [
                            "put (encode + write)", String(format: "%.2f", s.putGBps),
                            String(format: "%.2f", s.putGBps / s.memcpyGBps), formatBytes(s.putBytes),
                        ],
                        [
                            "get (read + decode)", String(format: "%.2f", s.getGBps),
                            String(format: "%.2f", s.getGBps / s.memcpyGBps), formatBytes(s.getBytes),
                        ],
                        [
                            "\(s.codec) encode alone, same chunks (peer)", String(format: "%.2f", s.encodeGBps),
                            String(format: "%.2f", s.encodeGBps / s.memcpyGBps), formatBytes(s.putBytes),
                        ],
                        [
                            "\(s.codec) encode, one block repeated (peer)",
                            String(format: "%.2f", s.encodeOneBlockGBps),
                            String(format: "%.2f", s.encodeOneBlockGBps / s.memcpyGBps), "-",
                        ],
                        [
                            "file write + fsync (peer)", String(format: "%.2f", s.fileWriteSyncGBps),
                            String(format: "%.2f", s.fileWriteSyncGBps / s.memcpyGBps), "-",
                        ],
                        [
                            "file pread (peer)", String(format: "%.2f", s.filePreadGBps),
                            String(format: "%.2f", s.filePreadGBps / s.memcpyGBps), "-",
                        ],
                    ]
                ).render())
            print(
                String(
                    format:
                        "put %.2fx the codec's encode alone of the same chunks (%.2fx of one block repeated), %.2fx a file write + fsync; get %.2fx a file pread (warm)",
                    s.putGBps / max(s.encodeGBps, 1e-12), s.putGBps / max(s.encodeOneBlockGBps, 1e-12),
                    s.putGBps / max(s.fileWriteSyncGBps, 1e-12),
                    s.getGBps / max(s.filePreadGBps, 1e-12)))
            print(
                String(
                    format:
                        "put kept %.2f of %d cores busy, %.2f CPU s/GB; the encode alone %.2f cores, %.2f CPU s/GB",
                    s.putCPUSeconds / max(s.putSeconds, 1e-12), ProcessInfo.processInfo.activeProcessorCount,
                    s.putCPUSeconds / max(Double(s.putBytes) / 1e9, 1e-12),
                    s.encodeCPUSeconds / max(s.encodeSeconds, 1e-12),
                    s.encodeCPUSeconds / max(s.encodeGBps * s.encodeSeconds, 1e-12)))
            print(
                String(
                    format:
                        "stored %@ for %@ raw (%.2fx; error max abs %.4g, relative RMS %.4f); store hits %d blocks, leaves-first replay %d: %@",
                    formatBytes(s.storedBytes), formatBytes(s.rawBytes),
                    Double(s.rawBytes) / Double(max(s.storedBytes, 1)),
                    s.maxAbsError, s.relativeRMSError,
                    s.hitBlocks, s.replayHitBlocks, s.hitBlocks == s.replayHitBlocks ? "equal" : "DIFFERENT"))
        }
    }

    /// Generated KV of one block of shape `s`: each block's tensors are a window, chosen by the
    /// block id, of a pool of normal-distributed values.
    func blockMaker(_ s: Shape, _ dtype: DType) -> (Int) throws -> KVCacheData {
        var rng = SplitMix64(seed: 42)
        let perTensor = s.kvHeads * blockTokens * s.headDim
        let poolFloats = (0 ..< (perTensor + 4099)).map { _ in
            Float(bitPattern: UInt32(rng.bf16Normal(count: 1, std: 1)[0]) << 16)
        }
        let pool = FloatCodec.encode(poolFloats, as: dtype)
        let esz = dtype.elementSize!
        let blockTokens = blockTokens
        return { id in
            try KVCacheData(
                layers: (0 ..< s.layers).map { l in
                    let k = (id &* 131 &+ l &* 17) & 4095, v = (id &* 71 &+ l &* 29 &+ 2048) & 4095
                    return try KVLayer(
                        keys: KVTensor(
                            dtype: dtype, heads: s.kvHeads, tokens: blockTokens, headDim: s.headDim,
                            bytes: Array(pool[k * esz ..< (k + perTensor) * esz])),
                        values: KVTensor(
                            dtype: dtype, heads: s.kvHeads, tokens: blockTokens, headDim: s.headDim,
                            bytes: Array(pool[v * esz ..< (v + perTensor) * esz])))
                })
        }
    }

    /// Replays `reqs` through a real store, one chunk per block, with generated KV bytes.
    func replayThroughStore(_ reqs: [TraceRequest], shape: (Shape, DType), capacity: Int) throws -> StoreReport {
        let (s, dtype) = shape
        let dir = store ?? NSTemporaryDirectory() + "wstore-bench-kv-\(UUID().uuidString)"
        defer { if store == nil { try? FileManager.default.removeItem(atPath: dir) } }
        var o = KVStore.Options()
        o.chunkTokens = blockTokens
        o.codec = codec
        o.maxChunks = capacity
        o.threads = threads
        let kvStore = try KVStore.create(at: dir, options: o, durability: durability)
        let block = blockMaker(s, dtype)
        var hits = 0, putBytes = 0, getBytes = 0, putSeconds = 0.0, getSeconds = 0.0
        var encodeBytes = 0, encodeSeconds = 0.0, putCPUSeconds = 0.0, encodeCPUSeconds = 0.0
        for (n, r) in reqs.enumerated() where !r.hashIDs.isEmpty {
            let tokens = r.hashIDs.flatMap { id in
                (0 ..< blockTokens).map { UInt32(truncatingIfNeeded: id &* blockTokens &+ $0) }
            }
            let (found, gt) = try kvTime { try kvStore.lookup(tokens: tokens, model: "bench") }
            hits += found.chunks
            getSeconds += gt
            getBytes += found.kv?.byteCount ?? 0
            let kv = try KVCacheData.concatenate(try r.hashIDs.map(block))
            // The peer encodes the chunks this put writes (those after the cached prefix),
            // from the same buffer: before the put on even requests, after it on odd ones,
            // so neither finds the other's bytes in the CPU caches more often.
            let encodePeer = {
                let (_, et, ec) = try kvTimeCPU {
                    for c in found.chunks ..< r.hashIDs.count {
                        _ = try KVChunk.encodeParts(
                            kv.slice(tokens: c * blockTokens ..< (c + 1) * blockTokens), key: UInt64(c), codec: codec,
                            kivi: o.kivi, threads: threads)
                    }
                }
                encodeSeconds += et
                encodeCPUSeconds += ec
                encodeBytes += (r.hashIDs.count - found.chunks) * (kv.byteCount / r.hashIDs.count)
            }
            if n % 2 == 0 { try encodePeer() }
            let (res, pt, pc) = try kvTimeCPU { try kvStore.store(tokens: tokens, model: "bench", kv: kv) }
            putSeconds += pt
            putCPUSeconds += pc
            putBytes += res.rawBytes
            if n % 2 == 1 { try encodePeer() }
        }
        try kvStore.sync()
        var replayHits = 0
        _ = PrefixReplay.run(
            reqs.filter { !$0.hashIDs.isEmpty }, capacityBlocks: capacity, blockTokens: blockTokens,
            policy: .leavesFirst
        ) { replayHits += $0 }
        // memcpy of one block's bytes, repeated: the baseline.
        let one = try block(0)
        let bytes = one.byteCount
        let src = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes, alignment: 64)
        let dst = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes, alignment: 64)
        defer {
            src.deallocate()
            dst.deallocate()
        }
        src.initializeMemory(as: UInt8.self, repeating: 1)
        dst.initializeMemory(as: UInt8.self, repeating: 0)
        let reps = max(3, min(50, (1 << 30) / max(bytes, 1)))
        let (_, mt) = kvTime {
            for _ in 0 ..< reps { dst.baseAddress!.copyMemory(from: src.baseAddress!, byteCount: bytes) }
        }
        // Peers on the same bytes: the codec alone (every record of the chunk encoded, as a
        // put encodes them before writing them in place), then a file of them written and
        // synced, and read.
        let blockReps = max(3, min(20, (256 << 20) / max(bytes, 1)))
        let (_, et) = try kvTime {
            for _ in 0 ..< blockReps {
                _ = try KVChunk.encodeParts(one, key: 0, codec: codec, kivi: o.kivi, threads: threads)
            }
        }
        let raw = one.layers.flatMap { $0.keys.bytes + $0.values.bytes }
        let peerPath = dir + "/peer.bin"
        defer { try? Posix.unlink(peerPath) }
        let out = try Posix.create(peerPath)
        let (_, wt) = try kvTime {
            try raw.withUnsafeBytes { b in
                for _ in 0 ..< blockReps {
                    try Posix.write(out, b, path: peerPath)
                    try Posix.fsync(out, path: peerPath)
                }
            }
        }
        Posix.close(out)
        let fd = try Posix.openForReading(peerPath)
        defer { Posix.close(fd) }
        let (_, rt) = try kvTime {
            for i in 0 ..< blockReps {
                _ = try Posix.pread(
                    fd, into: UnsafeMutableRawBufferPointer(rebasing: dst[0 ..< min(dst.count, raw.count)]),
                    at: i * raw.count, path: peerPath)
            }
        }
        let stats = try kvStore.stats()
        // The codec's error on one block, keys and values of every layer.
        let encoded = try KVChunk.encode(one, key: 0, codec: codec, kivi: o.kivi)
        let decoded = try encoded.withUnsafeBytes { try KVChunk.decode($0, key: 0, name: "block 0") }
        var maxAbs = 0.0, errSq = 0.0, normSq = 0.0
        for (a, b) in zip(one.layers, decoded.layers) {
            for (x, y) in [(a.keys, b.keys), (a.values, b.values)] {
                let xf = x.floats(), yf = y.floats()
                for i in xf.indices {
                    let e = Double(xf[i]) - Double(yf[i])
                    maxAbs = max(maxAbs, abs(e))
                    errSq += e * e
                    normSq += Double(xf[i]) * Double(xf[i])
                }
            }
        }
        return StoreReport(
            shape: s, codec: codec.rawValue, requests: reqs.count, capacityBlocks: capacity, hitBlocks: hits,
            replayHitBlocks: replayHits, putBytes: putBytes, putSeconds: putSeconds, getBytes: getBytes,
            getSeconds: getSeconds, memcpyGBps: Double(bytes * reps) / mt / 1e9,
            storedBytes: stats.storedBytes, rawBytes: stats.rawBytes, maxAbsError: maxAbs,
            relativeRMSError: normSq > 0 ? (errSq / normSq).squareRoot() : 0,
            durability: durability.rawValue,
            encodeGBps: encodeSeconds > 0 ? Double(encodeBytes) / encodeSeconds / 1e9 : 0,
            encodeOneBlockGBps: Double(bytes * blockReps) / et / 1e9,
            fileWriteSyncGBps: Double(raw.count * blockReps) / wt / 1e9,
            filePreadGBps: Double(raw.count * blockReps) / rt / 1e9,
            putCPUSeconds: putCPUSeconds, encodeCPUSeconds: encodeCPUSeconds, encodeSeconds: encodeSeconds)
    }

    /// A trace with shared system prompts and growing conversations, in Mooncake's shape.
    static func generatedTrace(requests: Int, seed: UInt64, blockTokens: Int) -> [TraceRequest] {
        var rng = SplitMix64(seed: seed)
        var next = 1000
        var conversations: [[Int]] = []
        var out: [TraceRequest] = []
        for i in 0 ..< requests {
            var ids: [Int]
            if !conversations.isEmpty && rng.next() % 10 < 6 {
                let c = Int(rng.next() % UInt64(conversations.count))
                ids = conversations[c]
                for _ in 0 ..< 1 + Int(rng.next() % 3) {
                    ids.append(next)
                    next += 1
                }
                conversations[c] = ids
            } else {
                ids = [Int(rng.next() % 4)]
                for _ in 0 ..< 1 + Int(rng.next() % 8) {
                    ids.append(next)
                    next += 1
                }
                conversations.append(ids)
            }
            out.append(
                TraceRequest(
                    timestamp: i * 300,
                    inputLength: (ids.count - 1) * blockTokens + 1 + Int(rng.next() % UInt64(blockTokens)),
                    outputLength: 100, hashIDs: ids))
        }
        return out
    }
}

import ArgumentParser
import Foundation
import KVCache
import WStoreCore
import WStoreRemote

/// `wstore bench kv-remote`: a cached prefix looked up from the remote tier, beside raw GETs of the same bytes.
struct BenchKVRemote: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kv-remote",
        abstract:
            "Remote-tier lookup of a cached prefix beside raw pipelined GETs of the same bytes, and pipelined beside one GET per chunk.",
        discussion: """
            One store puts a prompt of generated KV through the remote tier; a second, empty store \
            (read-only, so it keeps nothing) looks the prompt up: every chunk comes from Redis, is \
            checked and decoded, into the engine's buffers (as the C ABI and Python do) and into new \
            tensors. The baselines, on the same server in the same run: a pipelined GET of all the \
            chunk values (the bytes alone) through the same client, the same with every GET sent at \
            once, one GET per chunk (each raw path drops a value once read), and the lookup into \
            buffers done without pipelining (GET a chunk, check and decode it, then GET the next). \
            Repeat --chunk-tokens to compare chunk sizes.
            """)

    @Option(help: "The Redis server (or cluster seed): redis://[user:password@]host:port.") var remote: [String]
    @Option(help: "Prompt tokens.") var tokens = 4096
    @Option(help: "Tokens per chunk; repeat to compare chunk sizes (e.g. 16 32 64 128 256).")
    var chunkTokens: [Int] = [256]
    @Option(help: "layers=32,kv_heads=8,head_dim=128,dtype=bf16") var modelShape =
        "layers=32,kv_heads=8,head_dim=128,dtype=bf16"
    @Option(help: "The codec of the chunks.") var codec: KVCodec = .lossless
    @Option(help: "Threads that decode a chunk.") var threads = System.activeProcessorCount
    @Option(help: "Rounds; each measures every path once.") var rounds = 5
    @Option(help: "Reply bytes the windowed pipeline keeps in flight (the client's default unless given).")
    var windowBytes = RedisClient.Options().pipelineWindowBytes
    @Flag(help: "Print JSON.") var json = false

    struct Round: Codable {
        /// A lookup into the engine's buffers (`[tokens][kv_heads][head_dim]` per layer, allocated once).
        var lookupSeconds: Double
        /// A lookup returning new tensors.
        var lookupTensorsSeconds: Double
        var pipelinedGetSeconds: Double, perChunkGetSeconds: Double
        /// Every GET sent at once (no window: Redis builds every reply before it writes one).
        var unwindowedGetSeconds: Double
        /// The lookup into buffers done without pipelining: GET one chunk, check and decode it
        /// (on every thread), then GET the next.
        var serialLookupSeconds: Double
        /// Process CPU seconds (every thread) of the same four paths: steadier than wall time on a busy machine.
        var lookupCPU: Double, lookupTensorsCPU: Double, pipelinedGetCPU: Double, perChunkGetCPU: Double
        var unwindowedGetCPU: Double, serialLookupCPU: Double
        var lookupVsPipelined: Double { pipelinedGetSeconds / lookupSeconds }
        var lookupTensorsVsPipelined: Double { pipelinedGetSeconds / lookupTensorsSeconds }
        var pipelinedVsPerChunk: Double { perChunkGetSeconds / pipelinedGetSeconds }
        var lookupVsSerial: Double { serialLookupSeconds / lookupSeconds }
    }

    struct Report: Codable {
        var chunks: Int, chunkTokens: Int, rawBytes: Int, valueBytes: Int, codec: String, server: String
        var rounds: [Round]
    }

    func validate() throws {
        guard tokens > 0, !chunkTokens.isEmpty, chunkTokens.allSatisfy({ $0 > 0 && $0 <= tokens }), rounds > 0,
            threads > 0
        else {
            throw ValidationError(
                "--tokens, --chunk-tokens, --rounds and --threads must be positive, with tokens ≥ chunk tokens")
        }
        guard windowBytes >= 0 else { throw ValidationError("--window-bytes must be 0 or more") }
        _ = try BenchKV.parse(["--model-shape", modelShape]).parseShape(modelShape)
    }

    func run() throws {
        let reports = try chunkTokens.map(measure)
        if json {
            if reports.count == 1 { try JSONOutput.print(reports[0]) } else { try JSONOutput.print(reports) }
            return
        }
        let (shape, _) = try BenchKV.parse(["--model-shape", modelShape]).parseShape(modelShape)
        func range(_ xs: [Double]) -> String { String(format: "%.2f-%.2f", xs.min()!, xs.max()!) }
        func gbps(_ bytes: Int, _ s: [Double]) -> String { range(s.map { Double(bytes) / $0 / 1e9 }) }
        for report in reports {
            let measured = report.rounds
            print(
                "prefix: \(report.chunks * report.chunkTokens) tokens in \(report.chunks) chunks of \(report.chunkTokens), \(shape.layers) layers × \(shape.kvHeads) KV heads × \(shape.headDim), \(shape.dtype), codec \(report.codec): \(formatBytes(report.rawBytes)) raw, \(formatBytes(report.valueBytes)) in Redis (\(report.server))"
            )
            print(
                TextTable(
                    ["path", "GB/s of values (range)", "x pipelined GET (range)", "client CPU s (range)"],
                    [
                        [
                            "pipelined GET of the values (baseline)",
                            gbps(report.valueBytes, measured.map(\.pipelinedGetSeconds)), "1.00",
                            range(measured.map(\.pipelinedGetCPU)),
                        ],
                        [
                            "pipelined GET, all sent at once", gbps(report.valueBytes, measured.map(\.unwindowedGetSeconds)),
                            range(measured.map { $0.pipelinedGetSeconds / $0.unwindowedGetSeconds }),
                            range(measured.map(\.unwindowedGetCPU)),
                        ],
                        [
                            "one GET per chunk", gbps(report.valueBytes, measured.map(\.perChunkGetSeconds)),
                            range(measured.map { 1 / $0.pipelinedVsPerChunk }), range(measured.map(\.perChunkGetCPU)),
                        ],
                        [
                            "remote lookup into the engine's buffers", gbps(report.valueBytes, measured.map(\.lookupSeconds)),
                            range(measured.map(\.lookupVsPipelined)), range(measured.map(\.lookupCPU)),
                        ],
                        [
                            "lookup by one GET per chunk, each checked and decoded before the next GET",
                            gbps(report.valueBytes, measured.map(\.serialLookupSeconds)),
                            range(measured.map { $0.pipelinedGetSeconds / $0.serialLookupSeconds }),
                            range(measured.map(\.serialLookupCPU)),
                        ],
                        [
                            "remote lookup returning new tensors",
                            gbps(report.valueBytes, measured.map(\.lookupTensorsSeconds)),
                            range(measured.map(\.lookupTensorsVsPipelined)), range(measured.map(\.lookupTensorsCPU)),
                        ],
                    ]
                ).render())
            print(
                "\(self.rounds) rounds; decoded KV delivered by the lookup into buffers: \(range(measured.map { Double(report.rawBytes) / $0.lookupSeconds / 1e9 })) GB/s; pipelined lookup ÷ lookup by one GET per chunk: \(range(measured.map(\.lookupVsSerial)))x"
            )
            print()
        }
        if reports.count > 1 {
            print(
                TextTable(
                    [
                        "tokens/chunk", "chunks", "value size", "pipelined / one GET per chunk (range)",
                        "pipelined / all at once (range)", "lookup / pipelined GET (range)",
                        "lookup / lookup by one GET per chunk (range)",
                    ],
                    reports.map { r in
                        [
                            String(r.chunkTokens), String(r.chunks), formatBytes(r.valueBytes / max(1, r.chunks)),
                            range(r.rounds.map(\.pipelinedVsPerChunk)),
                            range(r.rounds.map { $0.unwindowedGetSeconds / $0.pipelinedGetSeconds }),
                            range(r.rounds.map(\.lookupVsPipelined)), range(r.rounds.map(\.lookupVsSerial)),
                        ]
                    }
                ).render())
            print(
                "(throughput ratios: above 1, the windowed pipeline beats one GET per chunk, or beats sending every GET at once)"
            )
        }
    }

    /// Stores the prompt through the remote tier with `chunkTokens` tokens per chunk, then times every path.
    func measure(chunkTokens: Int) throws -> Report {
        var bench = try BenchKV.parse(["--block-tokens", String(chunkTokens), "--model-shape", modelShape])
        bench.blockTokens = chunkTokens
        let (shape, dtype) = try bench.parseShape(modelShape)
        let block = bench.blockMaker(shape, dtype)
        let chunks = tokens / chunkTokens
        let prompt = (0 ..< UInt32(chunks * chunkTokens)).map { $0 &* 2_654_435_761 }
        let kv = try KVCacheData.concatenate(try (0 ..< chunks).map(block))
        let root = NSTemporaryDirectory() + "wstore-bench-kv-remote-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: root) }
        var o = KVStore.Options()
        o.chunkTokens = chunkTokens
        o.codec = codec
        o.threads = threads
        var r = RemoteTierOptions(urls: remote)
        r.namespace = "wstore:bench:\(UUID().uuidString):"
        r.timeout = .seconds(30)
        r.pipelineWindowBytes = windowBytes
        r.queueBytes = Int.max / 2
        r.queueChunks = max(r.queueChunks, chunks)
        let writer = try KVStore.create(at: root + "/writer", options: o, remote: r)
        try writer.store(tokens: prompt, model: "bench", kv: kv)
        guard writer.flushRemote(timeout: .seconds(600)), let ws = writer.tierStats(), ws.sentChunks == chunks else {
            throw ValidationError(
                "the remote tier did not take the prompt: \(writer.tierStats()?.lastError ?? "no remote tier")")
        }
        _ = try KVStore.create(at: root + "/reader", options: o)
        let reader = try KVStore.open(at: root + "/reader", readOnly: true, threads: threads, remote: r)
        let client = try RedisClient(
            urls: remote,
            options: {
                var c = RedisClient.Options()
                c.commandTimeout = .seconds(30)
                c.pipelineWindowBytes = windowBytes
                return c
            }())
        let unwindowed = try RedisClient(
            urls: remote,
            options: {
                var c = RedisClient.Options()
                c.commandTimeout = .seconds(30)
                c.pipelineWindowBytes = 0
                return c
            }())
        let chain = PrefixKey.chain(tokens: prompt, chunkTokens: chunkTokens, model: "bench")
        let keys = chain.map { Array("\(r.namespace)\(String(format: "%016llx", $0))".utf8) }
        defer { _ = try? client.pipeline(keys.map { RedisClient.Command([Array("DEL".utf8), $0]) }) }
        // The engine's buffers: per layer K and V, [tokens][kv_heads][head_dim], allocated once.
        let row = shape.headDim * dtype.elementSize!, tokenStride = shape.kvHeads * row
        let size = chunks * chunkTokens * tokenStride
        let buffers = (0 ..< 2 * shape.layers).map { _ in UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 64) }
        defer { buffers.forEach { $0.deallocate() } }
        for b in buffers { b.initializeMemory(as: UInt8.self, repeating: 0) }
        let views = (0 ..< shape.layers).map { l in
            KVLayerView(
                keys: buffers[2 * l].baseAddress!, values: buffers[2 * l + 1].baseAddress!, dtype: dtype,
                kvHeads: shape.kvHeads, headDim: shape.headDim, tokenStride: tokenStride)
        }
        /// Whether the buffers hold `kv` (head-major tensors) row for row.
        func buffersHoldPrompt() -> Bool {
            for l in 0 ..< shape.layers {
                for (i, t) in [kv.layers[l].keys, kv.layers[l].values].enumerated() {
                    let ok = t.bytes.withUnsafeBytes { src in
                        (0 ..< t.heads).allSatisfy { h in
                            (0 ..< t.tokens).allSatisfy { tok in
                                memcmp(
                                    buffers[2 * l + i].baseAddress! + tok * tokenStride + h * row,
                                    src.baseAddress! + (h * t.tokens + tok) * row, row) == 0
                            }
                        }
                    }
                    if !ok { return false }
                }
            }
            return true
        }
        /// The lookup into buffers as a client without pipelining does it: one GET, the chunk
        /// checked and decoded (its records on every thread), then the next GET.
        func serialLookup() throws {
            for (j, k) in keys.enumerated() {
                guard let value = try client.get([k])[0] else {
                    throw ValidationError("chunk \(j) is missing from the remote tier")
                }
                try value.withUnsafeBytes { b in
                    let name = "remote KV chunk \(j)"
                    let info = try KVChunk.info(b, key: chain[j], name: name)
                    try parallelFor(2 * info.layers, threads: threads) { i, _ in
                        try KVChunk.decodeTensor(
                            b, info, i, key: chain[j], name: name, into: views[i / 2].rows(i % 2, from: j * chunkTokens))
                    }
                }
            }
        }
        var measured: [Round] = []
        var valueBytes = 0
        _ = try reader.lookup(tokens: prompt, model: "bench", into: views)  // warm-up, not counted
        _ = try client.get(keys)
        for _ in 0 ..< self.rounds {
            for b in buffers { b.initializeMemory(as: UInt8.self, repeating: 0) }
            let (delivered, lt, lc) = try kvTimeCPU { try reader.lookup(tokens: prompt, model: "bench", into: views) }
            guard delivered.chunks == chunks, codec != .lossless || buffersHoldPrompt() else {
                throw ValidationError(
                    "the lookup into buffers delivered \(delivered.chunks) of \(chunks) chunks, or other bytes")
            }
            let (found, tt, tc) = try kvTimeCPU { try reader.lookup(tokens: prompt, model: "bench") }
            guard found.remoteChunks == chunks, found.kv == kv || codec != .lossless else {
                throw ValidationError(
                    "the lookup found \(found.remoteChunks) of \(chunks) chunks remotely, or other bytes")
            }
            // Every raw path drops each value once read, as one GET per chunk does.
            let (fetched, pt, pc) = try kvTimeCPU {
                var n = 0
                try client.streamGet(keys) { _, v in n += v?.count ?? 0 }
                return n
            }
            valueBytes = fetched
            let (_, ct, cc) = try kvTimeCPU { for k in keys { _ = try client.get([k]) } }
            let (_, ut, uc) = try kvTimeCPU { try unwindowed.streamGet(keys) { _, _ in } }
            for b in buffers { b.initializeMemory(as: UInt8.self, repeating: 0) }
            let (_, st, sc) = try kvTimeCPU { try serialLookup() }
            guard codec != .lossless || buffersHoldPrompt() else {
                throw ValidationError("the lookup by one GET per chunk delivered other bytes")
            }
            measured.append(
                Round(
                    lookupSeconds: lt, lookupTensorsSeconds: tt, pipelinedGetSeconds: pt, perChunkGetSeconds: ct,
                    unwindowedGetSeconds: ut, serialLookupSeconds: st, lookupCPU: lc, lookupTensorsCPU: tc, pipelinedGetCPU: pc,
                    perChunkGetCPU: cc, unwindowedGetCPU: uc, serialLookupCPU: sc))
        }
        return Report(
            chunks: chunks, chunkTokens: chunkTokens, rawBytes: kv.byteCount, valueBytes: valueBytes,
            codec: codec.rawValue, server: remote.joined(separator: ","), rounds: measured)
    }
}

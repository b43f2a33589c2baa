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
            checked and decoded. The baselines, on the same server in the same run: one pipelined \
            GET of all the chunk values (the bytes alone), and one GET per chunk.
            """)

    @Option(help: "The Redis server (or cluster seed): redis://[user:password@]host:port.") var remote: [String]
    @Option(help: "Prompt tokens.") var tokens = 4096
    @Option(help: "Tokens per chunk.") var chunkTokens = 256
    @Option(help: "layers=32,kv_heads=8,head_dim=128,dtype=bf16") var modelShape =
        "layers=32,kv_heads=8,head_dim=128,dtype=bf16"
    @Option(help: "The codec of the chunks.") var codec: KVCodec = .lossless
    @Option(help: "Threads that decode a chunk.") var threads = System.activeProcessorCount
    @Option(help: "Rounds; each measures every path once.") var rounds = 5
    @Flag(help: "Print JSON.") var json = false

    struct Round: Codable {
        var lookupSeconds: Double, pipelinedGetSeconds: Double, perChunkGetSeconds: Double
        var lookupVsPipelined: Double { pipelinedGetSeconds / lookupSeconds }
        var pipelinedVsPerChunk: Double { perChunkGetSeconds / pipelinedGetSeconds }
    }

    struct Report: Codable {
        var chunks: Int, chunkTokens: Int, rawBytes: Int, valueBytes: Int, codec: String, server: String
        var rounds: [Round]
    }

    func validate() throws {
        guard tokens > 0, chunkTokens > 0, tokens >= chunkTokens, rounds > 0, threads > 0 else {
            throw ValidationError(
                "--tokens, --chunk-tokens, --rounds and --threads must be positive, with tokens ≥ chunk tokens")
        }
        _ = try BenchKV.parse(["--model-shape", modelShape]).parseShape(modelShape)
    }

    func run() throws {
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
        r.queueBytes = Int.max / 2
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
                return c
            }())
        let keys = PrefixKey.chain(tokens: prompt, chunkTokens: chunkTokens, model: "bench")
            .map { Array("\(r.namespace)\(String(format: "%016llx", $0))".utf8) }
        defer { _ = try? client.pipeline(keys.map { RedisClient.Command([Array("DEL".utf8), $0]) }) }
        var measured: [Round] = []
        var valueBytes = 0
        _ = try reader.lookup(tokens: prompt, model: "bench")  // warm-up, not counted
        _ = try client.get(keys)
        for _ in 0 ..< self.rounds {
            let (found, lt) = try kvTime { try reader.lookup(tokens: prompt, model: "bench") }
            guard found.remoteChunks == chunks, found.kv == kv || codec != .lossless else {
                throw ValidationError(
                    "the lookup found \(found.remoteChunks) of \(chunks) chunks remotely, or other bytes")
            }
            let (values, pt) = try kvTime { try client.get(keys) }
            valueBytes = values.reduce(0) { $0 + ($1?.count ?? 0) }
            let (_, ct) = try kvTime { for k in keys { _ = try client.get([k]) } }
            measured.append(Round(lookupSeconds: lt, pipelinedGetSeconds: pt, perChunkGetSeconds: ct))
        }
        let report = Report(
            chunks: chunks, chunkTokens: chunkTokens, rawBytes: kv.byteCount, valueBytes: valueBytes,
            codec: codec.rawValue, server: remote.joined(separator: ","), rounds: measured)
        if json {
            try JSONOutput.print(report)
            return
        }
        print(
            "prefix: \(chunks * chunkTokens) tokens in \(chunks) chunks of \(chunkTokens), \(shape.layers) layers × \(shape.kvHeads) KV heads × \(shape.headDim), \(shape.dtype), codec \(codec.rawValue): \(formatBytes(kv.byteCount)) raw, \(formatBytes(valueBytes)) in Redis (\(report.server))"
        )
        func range(_ xs: [Double]) -> String { String(format: "%.2f-%.2f", xs.min()!, xs.max()!) }
        func gbps(_ bytes: Int, _ s: [Double]) -> String { range(s.map { Double(bytes) / $0 / 1e9 }) }
        print(
            TextTable(
                ["path", "GB/s of values (range)", "x pipelined GET (range)"],
                [
                    [
                        "pipelined GET of the values (baseline)", gbps(valueBytes, measured.map(\.pipelinedGetSeconds)),
                        "1.00",
                    ],
                    [
                        "one GET per chunk", gbps(valueBytes, measured.map(\.perChunkGetSeconds)),
                        range(measured.map { 1 / $0.pipelinedVsPerChunk }),
                    ],
                    [
                        "remote lookup (probe, GET, check, decode)", gbps(valueBytes, measured.map(\.lookupSeconds)),
                        range(measured.map(\.lookupVsPipelined)),
                    ],
                ]
            ).render())
        print(
            "\(self.rounds) rounds; decoded KV delivered by the lookup: \(range(measured.map { Double(kv.byteCount) / $0.lookupSeconds / 1e9 })) GB/s"
        )
    }
}

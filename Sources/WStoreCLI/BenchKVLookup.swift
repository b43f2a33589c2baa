import ArgumentParser
import Foundation
import KVCache
import WStoreCore

/// `wstore bench kv-lookup`: a cached prefix looked up straight into engine-layout buffers,
/// beside the codec's own decode of the same records into one contiguous buffer and an
/// LMDB get + memcpy of the same chunk values, all in one run.
struct BenchKVLookup: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kv-lookup",
        abstract: "KV lookup into engine buffers beside the codec's decode and a plain get of the same bytes.")

    @Option(help: "layers=32,kv_heads=8,head_dim=128,dtype=bf16") var modelShape =
        "layers=8,kv_heads=8,head_dim=128,dtype=bf16"
    @Option(help: "The store's codec.") var codec: KVCodec = .lossless
    @Option(help: "Tokens per chunk.") var chunkTokens = 256
    @Option(help: "Tokens of the cached prefix.") var tokens = 2048
    @Option(help: "Timed repetitions of each path (the best is kept).") var repeats = 7
    @Option(help: "The store directory to keep (default: a temporary one, removed after).") var store: String?
    @Flag(help: "Print JSON.") var json = false

    struct Report: Codable {
        var codec: String
        var rawBytes: Int
        var storedBytes: Int
        var lookupIntoGBps: Double
        var lookupSwiftGBps: Double
        var codecDecodeGBps: Double
        var getMemcpyGBps: Double
        var lookupVsCodec: Double
        var lookupVsGet: Double
        var store: String?
    }

    func run() throws {
        var fields: [String: String] = [:]
        for kv in modelShape.split(separator: ",") {
            let p = kv.split(separator: "=", maxSplits: 1)
            guard p.count == 2 else { throw ValidationError("--model-shape: \(kv) is not key=value") }
            fields[String(p[0])] = String(p[1])
        }
        guard let layers = Int(fields["layers"] ?? ""), let heads = Int(fields["kv_heads"] ?? ""),
            let dim = Int(fields["head_dim"] ?? ""),
            let dtype = DType(safetensorsName: (fields["dtype"] ?? "bf16").uppercased()),
            KVTensor.supportedDTypes.contains(dtype), layers > 0, heads > 0, dim > 0
        else {
            throw ValidationError(
                "--model-shape needs layers, kv_heads, head_dim (positive) and dtype f16, bf16 or f32")
        }
        guard chunkTokens > 0, tokens >= chunkTokens, repeats > 0 else {
            throw ValidationError("--tokens must hold at least one chunk")
        }
        let dir = store ?? NSTemporaryDirectory() + "wstore-bench-kvlookup-\(UUID().uuidString)"
        defer { if store == nil { try? FileManager.default.removeItem(atPath: dir) } }
        var o = KVStore.Options()
        o.chunkTokens = chunkTokens
        o.codec = codec
        let kv = try KVStore.create(at: dir, options: o)
        let n = tokens / chunkTokens * chunkTokens, esz = dtype.elementSize!, row = dim * esz, stride = heads * row
        var rng = SplitMix64(seed: 7)
        let ids = (0 ..< n).map { _ in UInt32(truncatingIfNeeded: rng.next()) }
        // Engine layout [tokens][heads][dim] per layer, normal-distributed values.
        let perLayer = n * stride
        let k = UnsafeMutableRawBufferPointer.allocate(byteCount: layers * perLayer, alignment: 64)
        let v = UnsafeMutableRawBufferPointer.allocate(byteCount: layers * perLayer, alignment: 64)
        defer {
            k.deallocate()
            v.deallocate()
        }
        for buf in [k, v] {
            let floats = rng.bf16Normal(count: layers * perLayer / esz, std: 1).map {
                Float(bitPattern: UInt32($0) << 16)
            }
            floats.withUnsafeBufferPointer {
                FloatCodec.encode($0.baseAddress!, count: $0.count, as: dtype, into: buf.baseAddress!)
            }
        }
        let views = (0 ..< layers).map { l in
            KVLayerView(
                keys: k.baseAddress! + l * perLayer, values: v.baseAddress! + l * perLayer, dtype: dtype,
                kvHeads: heads, headDim: dim, tokenStride: stride)
        }
        _ = try kv.store(tokens: ids, model: "bench", from: views)
        let rawBytes = 2 * layers * perLayer
        // Destinations: engine buffers for the lookup, contiguous ones for the codec.
        let dk = UnsafeMutableRawBufferPointer.allocate(byteCount: layers * perLayer, alignment: 64)
        let dv = UnsafeMutableRawBufferPointer.allocate(byteCount: layers * perLayer, alignment: 64)
        defer {
            dk.deallocate()
            dv.deallocate()
        }
        dk.initializeMemory(as: UInt8.self, repeating: 0)
        dv.initializeMemory(as: UInt8.self, repeating: 0)
        let into = (0 ..< layers).map { l in
            KVLayerView(
                keys: dk.baseAddress! + l * perLayer, values: dv.baseAddress! + l * perLayer, dtype: dtype,
                kvHeads: heads, headDim: dim, tokenStride: stride)
        }
        let keys = PrefixKey.chain(tokens: ids, chunkTokens: chunkTokens, model: "bench")
        let chunkValues = try keys.map { try kv.rawChunk($0)! }
        let storedBytes = chunkValues.reduce(0) { $0 + $1.count }

        func best(_ body: () throws -> Void) throws -> Double {
            try body()  // warm
            var b = Double.infinity
            for _ in 0 ..< repeats { b = min(b, try kvTime(body).1) }
            return b
        }
        let tInto = try best {
            let d = try kv.lookup(tokens: ids, model: "bench", into: into)
            guard d.tokens == n else { throw ValidationError("lookup found \(d.tokens) of \(n) tokens") }
        }
        if codec.bits == nil {
            guard memcmp(dk.baseAddress!, k.baseAddress!, dk.count) == 0,
                memcmp(dv.baseAddress!, v.baseAddress!, dv.count) == 0
            else {
                throw ValidationError("lookup returned other bytes than were stored")
            }
        }
        let tSwift = try best {
            let d = try kv.lookup(tokens: ids, model: "bench")
            guard d.tokens == n else { throw ValidationError("lookup found \(d.tokens) of \(n) tokens") }
        }
        // The codec alone: every record of every chunk decoded into one contiguous buffer.
        let contiguous = UnsafeMutableRawBufferPointer.allocate(byteCount: max(rawBytes, 1) + 4096, alignment: 64)
        defer { contiguous.deallocate() }
        let tCodec = try best {
            var at = 0
            for (c, value) in chunkValues.enumerated() {
                try value.withUnsafeBytes { b in
                    let info = try KVChunk.info(b, key: keys[c], name: "chunk \(c)")
                    for i in 0 ..< 2 * info.layers {
                        let off = Int(
                            UInt64(littleEndian: b.loadUnaligned(fromByteOffset: 48 + 16 * i, as: UInt64.self)))
                        let len = Int(
                            UInt64(littleEndian: b.loadUnaligned(fromByteOffset: 48 + 16 * i + 8, as: UInt64.self)))
                        let view = try RecordView(
                            UnsafeRawBufferPointer(rebasing: b[off ..< off + len]),
                            binding: KVChunk.recordBinding(key: keys[c], index: i), name: "record")
                        let dst = UnsafeMutableRawBufferPointer(rebasing: contiguous[at ..< at + view.rawSize])
                        try RecordDecoder.decode(view, name: "record", into: dst, threads: 1, verify: true)
                        at = (at + view.rawSize) % max(1, rawBytes - view.rawSize)
                    }
                }
            }
        }
        // A plain get of the same chunk values and a memcpy of them (what a byte store does).
        let tGet = try best {
            var at = 0
            for key in keys {
                try kv.withChunkValue(key) { b in
                    let n = min(b.count, contiguous.count - at)
                    contiguous.baseAddress!.advanced(by: at).copyMemory(from: b.baseAddress!, byteCount: n)
                    at = (at + n) % max(1, contiguous.count - b.count)
                }
            }
        }
        let gb = Double(rawBytes) / 1e9
        let r = Report(
            codec: codec.rawValue, rawBytes: rawBytes, storedBytes: storedBytes, lookupIntoGBps: gb / tInto,
            lookupSwiftGBps: gb / tSwift, codecDecodeGBps: gb / tCodec, getMemcpyGBps: Double(storedBytes) / 1e9 / tGet,
            lookupVsCodec: tCodec / tInto, lookupVsGet: (Double(rawBytes) / tInto) / (Double(storedBytes) / tGet),
            store: store)
        if json {
            let e = JSONEncoder()
            e.outputFormatting = [.sortedKeys]
            print(String(decoding: try e.encode(r), as: UTF8.self))
            return
        }
        print(
            "KV lookup, \(codec.rawValue), \(layers) layers × \(heads) heads × \(dim) \(dtype), \(n) tokens in \(n / chunkTokens) chunks, "
                + "\(formatBytes(rawBytes)) raw, \(formatBytes(storedBytes)) stored; best of \(repeats); one thread")
        print(
            TextTable(
                ["path", "GB/s", "vs this lookup"],
                [
                    ["lookup into engine buffers", String(format: "%.2f", r.lookupIntoGBps), "1.00"],
                    [
                        "lookup (Swift KVCacheData)", String(format: "%.2f", r.lookupSwiftGBps),
                        String(format: "%.2f", tInto / tSwift),
                    ],
                    [
                        "codec decode, contiguous", String(format: "%.2f", r.codecDecodeGBps),
                        String(format: "%.2f", tInto / tCodec),
                    ],
                    [
                        "LMDB get + memcpy (stored bytes)", String(format: "%.2f", r.getMemcpyGBps),
                        String(format: "%.2f", tInto / tGet),
                    ],
                ]
            ).render())
    }
}

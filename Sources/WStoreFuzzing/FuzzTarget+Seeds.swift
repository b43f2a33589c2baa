import Foundation
import KVCache
import WStoreCore
import WStoreFormats
import WStoreReplay

extension FuzzTarget {
    /// Valid inputs written by wstore's own writers, to start a corpus from (`make fuzz`
    /// adds the files the Python fixture script writes with the real safetensors and
    /// gguf packages).
    public func seeds() throws -> [[UInt8]] {
        var rng = SplitMix64(seed: 7)
        func bytes(_ n: Int) -> [UInt8] { (0 ..< n).map { _ in UInt8(truncatingIfNeeded: rng.next()) } }
        /// bf16 values with a narrow exponent range, as trained weights have.
        func weights(_ count: Int) -> [UInt8] {
            (0 ..< count).flatMap { _ -> [UInt8] in
                let v = Float(Double(rng.next() % 2001) / 1000 - 1) * 0.02
                let b = UInt16(truncatingIfNeeded: v.bitPattern >> 16)
                return [UInt8(b & 0xFF), UInt8(b >> 8)]
            }
        }
        switch self {
        case .safetensors:
            let a = weights(24), b = bytes(16)
            return [
                SafetensorsWriter.header(
                    entries: [
                        .init(name: "w", dtypeName: "BF16", shape: [2, 12], byteCount: a.count),
                        .init(name: "b", dtypeName: "F32", shape: [4], byteCount: b.count),
                    ],
                    metadata: [(key: "format", value: "pt")]) + a + b,
                SafetensorsWriter.header(entries: [], metadata: []),
            ]
        case .gguf:
            return []
        case .record:
            var out: [[UInt8]] = []
            for (codec, frame) in [
                (CodecChoice.raw, Record.defaultFrameSize), (.zstd, Record.defaultFrameSize), (.zstd, 256),
            ] {
                var o = EncodeOptions()
                o.codec = codec
                o.frameSize = frame
                o.minSavings = 0
                let src = weights(600)
                let rec = try src.withUnsafeBytes {
                    try RecordEncoder.encode($0, dtype: .bf16, shape: [20, 30], binding: Self.binding, options: o)
                }
                var b = [UInt8](repeating: 0, count: rec.totalSize)
                src.withUnsafeBytes { s in b.withUnsafeMutableBytes { rec.write(into: $0, source: s) } }
                out.append(b)
            }
            return out
        case .kv:
            func tensor() throws -> KVTensor {
                try KVTensor(
                    dtype: .f16, heads: 2, tokens: 8, headDim: 4,
                    bytes: FloatCodec.encode((0 ..< 64).map { _ in Float(rng.next() % 100) / 50 - 1 }, as: .f16))
            }
            let kv = try KVCacheData(layers: [
                KVLayer(keys: tensor(), values: tensor()), KVLayer(keys: tensor(), values: tensor()),
            ])
            var out: [[UInt8]] = []
            for codec in [KVCodec.lossless, .int4] {
                out.append(
                    [0]
                        + (try KVChunk.encode(
                            kv, key: Self.chunkKey, codec: codec, kivi: KIVIOptions(group: 4, residual: 0))))
            }
            // Index entries (format-spec/KV.md §2): parent, last use, stored and raw bytes, children,
            // depth, version marker, model; version 1 as it is, version 2 sealed to the chunk key.
            for marker: UInt32 in [0, 0x324E_564B] {
                var node: [UInt8] = []
                for v: UInt64 in [1, 9, 4096, 8192] { withUnsafeBytes(of: v.littleEndian) { node += $0 } }
                for v: UInt32 in [1, 2, marker] { withUnsafeBytes(of: v.littleEndian) { node += $0 } }
                node += Array("m".utf8)
                out.append([1] + (marker == 0 ? node : Sealed.seal(node, key: PrefixKey.bytes(Self.chunkKey))))
            }
            return out
        case .routingTrace:
            var trace = RoutingTrace(header: .init(layers: 2, experts: 8, topK: 2, expertBytes: 1024, model: "m"))
            for t in 0 ..< 6 {
                try trace.append(
                    request: t / 3, experts: [[t % 8, (t + 1) % 8], [(t + 3) % 8, (t + 5) % 8]],
                    predicted: t % 2 == 0 ? [nil, [t % 8, (t + 2) % 8]] : nil)
            }
            return [[UInt8](try trace.jsonLines())]
        case .mooncake:
            let lines = """
                {"timestamp": 0, "input_length": 1024, "output_length": 12, "hash_ids": [0, 1]}
                {"timestamp": 27, "input_length": 2048, "output_length": 3, "hash_ids": [0, 1, 2, 3]}
                {"timestamp": 41, "input_length": 512, "hash_ids": [7]}

                """
            return [Array(lines.utf8)]
        }
    }
}

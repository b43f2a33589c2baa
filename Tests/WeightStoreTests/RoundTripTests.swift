import Foundation
import Testing
import WStoreTestSupport

@testable import WStoreCore
@testable import WeightStore

@Suite struct RoundTripTests {
    static let dtypes: [DType] = DType.allPlain + DType.allSubByte + [.ggml(12)]

    @Test(arguments: dtypes, CodecChoice.allCases)
    func everyDTypeAndCodecRoundTrips(_ dtype: DType, _ codec: CodecChoice) throws {
        let dir = TemporaryDirectory()
        let store = try WeightStore.create(at: dir.sub("s"))
        let shapes: [[Int]] = [[], [0], [3, 0, 5], [7], [33, 17], [2, 3, 4, 5]]
        for (i, shape) in shapes.enumerated() {
            let elements = shape.reduce(1, *)
            let bytes = sampleBytes(dtype, elements: elements, seed: UInt64(i))
            let name = "t\(i)"
            let written = try bytes.withUnsafeBytes {
                try store.put(name, dtype: dtype, shape: shape, bytes: $0, codec: codec)
            }
            let info = try store.info(name)
            #expect(info == written)
            #expect(info.dtype == dtype)
            #expect(info.shape == shape)
            #expect(info.rawSize == bytes.count)
            #expect(try store.readBytes(name) == bytes)
            if codec == .raw || bytes.isEmpty { #expect(info.isRaw) }
            if info.isRaw {
                try store.withTensor(name, verify: true) { b, _ in #expect(Array(b) == bytes) }
            } else {
                #expect(throws: WStoreError.notRaw(name: name, codec: "zstd")) {
                    try store.withTensor(name) { _, _ in }
                }
            }
        }
    }

    @Test func subByteTensorsTakeWholeBytesRoundedUp() throws {
        let dir = TemporaryDirectory()
        let store = try WeightStore.create(at: dir.sub("s"))
        let b = randomBytes(4, seed: 1)  // 7 f4 elements take 4 bytes; 5 f6 elements take 4 bytes
        try b.withUnsafeBytes { _ = try store.put("f4", dtype: .f4, shape: [7], bytes: $0) }
        try b.withUnsafeBytes { _ = try store.put("f6", dtype: .f6e3m2, shape: [5], bytes: $0) }
        #expect(try store.readBytes("f4") == b && store.readBytes("f6") == b)
        #expect(throws: WStoreError.self) {
            try b.withUnsafeBytes { _ = try store.put("bad", dtype: .f4, shape: [9], bytes: $0) }
        }
        #expect(DType(code: 19, ggmlType: 0) == .f4 && DType(safetensorsName: "F6_E2M3") == .f6e2m3)
        #expect(DType(code: 22, ggmlType: 0) == nil)
    }

    @Test func compressibleBF16IsCompressedAndNoiseIsStoredRaw() throws {
        let dir = TemporaryDirectory()
        let store = try WeightStore.create(at: dir.sub("s"))
        let weights = weightLikeBF16(100_000, seed: 1)
        let noise = randomBytes(200_000, seed: 2)
        let w = try weights.withUnsafeBytes { try store.put("w", dtype: .bf16, shape: [100_000], bytes: $0) }
        let n = try noise.withUnsafeBytes { try store.put("n", dtype: .u8, shape: [200_000], bytes: $0) }
        #expect(w.codec == "zstd")
        #expect(Double(w.rawSize) / Double(w.storedSize) > 1.3)
        #expect(n.codec == "raw")  // auto: saves < 5%, so zero-copy readable
    }

    /// Encodes `bytes` with `options`, writes the record out, and returns each (frame, plane)'s
    /// method and the bytes it decodes to (on one and on two threads, which must agree).
    private func encodeAndDecode(_ bytes: [UInt8], dtype: DType, options: EncodeOptions) throws -> (
        methods: [Record.PlaneMethod], decoded: [UInt8]
    ) {
        let record = try bytes.withUnsafeBytes {
            try RecordEncoder.encode(
                $0, dtype: dtype, shape: [bytes.count / dtype.elementSize!], binding: 7, options: options)
        }
        var buffer = [UInt8](repeating: 0, count: record.totalSize)
        bytes.withUnsafeBytes { src in buffer.withUnsafeMutableBytes { record.write(into: $0, source: src) } }
        return try buffer.withUnsafeBytes { rec in
            let view = try RecordView(rec, binding: 7, name: "t")
            #expect(view.codec == .zstd)
            let methods = (0 ..< view.frameCount).flatMap { f in
                (0 ..< view.planeCount).map { view.entry(frame: f, plane: $0).method }
            }
            var outs: [[UInt8]] = []
            for threads in [1, 2] {
                var out = [UInt8](repeating: 0xA5, count: bytes.count)
                try out.withUnsafeMutableBytes { try RecordDecoder.decode(view, name: "t", into: $0, threads: threads) }
                outs.append(out)
            }
            #expect(outs[0] == outs[1])
            return (methods, outs[0])
        }
    }

    @Test func bf16MantissaPlaneIsStoredAsItIsAndDecodesBitExact() throws {
        // Two 1 MiB frames of weight-like bf16: plane 0 (exponents) compresses, plane 1
        // (mantissa and sign, close to random) does not, and its sample says so.
        let bytes = weightLikeBF16(1 << 20, seed: 11)
        var options = EncodeOptions()
        options.codec = .zstd
        options.threads = 2
        let (methods, decoded) = try encodeAndDecode(bytes, dtype: .bf16, options: options)
        #expect(methods == [.zstd, .stored, .zstd, .stored])
        #expect(decoded == bytes)
    }

    @Test func aPlaneIsStoredWhenItsSampleDoesNotCompress() throws {
        // One plane (u8) per 1 MiB frame: its first 64 KiB random, the rest zeros. The
        // whole plane compresses; its 32 KiB sample does not, so it is stored as it is,
        // unless sampling is off.
        var bytes = randomBytes(64 << 10, seed: 3)
        bytes += [UInt8](repeating: 0, count: (1 << 20) - bytes.count)
        var options = EncodeOptions()
        options.codec = .zstd
        let sampled = try encodeAndDecode(bytes, dtype: .u8, options: options)
        #expect(sampled.methods == [.stored])
        #expect(sampled.decoded == bytes)
        options.sampleSize = 0
        let whole = try encodeAndDecode(bytes, dtype: .u8, options: options)
        #expect(whole.methods == [.zstd])
        #expect(whole.decoded == bytes)
        // And a plane too short to sample is compressed whole.
        options.sampleSize = 1 << 20
        #expect(try encodeAndDecode(bytes, dtype: .u8, options: options).methods == [.zstd])
    }

    @Test func manyFramesDecodeInParallelAndSerially() throws {
        var options = EncodeOptions()
        options.frameSize = 4096
        options.threads = 4
        for dtype in [DType.bf16, .f32, .f16, .u8] {
            let bytes = sampleBytes(dtype, elements: 300_001 / dtype.elementSize!, seed: 9)
            let record = try bytes.withUnsafeBytes {
                try RecordEncoder.encode(
                    $0, dtype: dtype, shape: [bytes.count / dtype.elementSize!], binding: 0, options: options)
            }
            var buffer = [UInt8](repeating: 0, count: record.totalSize)
            bytes.withUnsafeBytes { src in buffer.withUnsafeMutableBytes { record.write(into: $0, source: src) } }
            try buffer.withUnsafeBytes { rec in
                let view = try RecordView(rec, binding: 0, name: "t")
                #expect(view.codec == .zstd)
                #expect(view.frameCount == (bytes.count + 4095) / 4096)
                for threads in [1, 2, 7] {
                    var out = [UInt8](repeating: 0, count: bytes.count)
                    try out.withUnsafeMutableBytes {
                        try RecordDecoder.decode(view, name: "t", into: $0, threads: threads)
                    }
                    #expect(out == bytes)
                }
            }
        }
    }

    @Test func largeTensorSpansSeveralDefaultFrames() throws {
        let dir = TemporaryDirectory()
        let store = try WeightStore.create(at: dir.sub("s"))
        let bytes = weightLikeBF16(3 << 19, seed: 5)  // 3 MiB: three 1 MiB frames
        let info = try bytes.withUnsafeBytes { try store.put("big", dtype: .bf16, shape: [3 << 19], bytes: $0) }
        #expect(info.frameCount == 3)
        #expect(try store.readBytes("big", threads: 2) == bytes)
    }

    /// Reading a record from the data file (by its offset under the map) gives the same
    /// bytes as the map, for raw and compressed records, large ones several 1 MiB read
    /// pieces long and small ones that fall back to the map, checked or not.
    @Test(arguments: [ReadPath.map, .file, .fileDropCache])
    func everyReadPathGivesTheSameBytes(_ path: ReadPath) throws {
        let dir = TemporaryDirectory()
        let store = try WeightStore.create(at: dir.sub("s"))
        let tensors: [(String, [UInt8], CodecChoice)] = [
            ("raw-large", randomBytes(5 << 19 + 3, seed: 1), .raw),
            ("zstd-large", weightLikeBF16(5 << 19, seed: 2), .zstd),
            ("raw-small", randomBytes(100, seed: 3), .raw), ("zstd-small", weightLikeBF16(300, seed: 4), .zstd),
        ]
        for (name, bytes, codec) in tensors {
            try bytes.withUnsafeBytes {
                _ = try store.put(name, dtype: .u8, shape: [bytes.count], bytes: $0, codec: codec)
            }
        }
        try store.sync()
        let reader = try WeightStore.open(at: dir.sub("s"))
        for (name, bytes, _) in tensors {
            for (threads, verify) in [(1, true), (2, true), (1, false)] {
                var out = [UInt8](repeating: 0, count: bytes.count)
                try out.withUnsafeMutableBytes {
                    _ = try reader.read(name, into: $0, threads: threads, verify: verify, path: path)
                }
                #expect(out == bytes, "\(name) threads \(threads) verify \(verify)")
            }
        }
    }

    @Test func rawPayloadsAre64ByteAlignedInTheMap() throws {
        let dir = TemporaryDirectory()
        let store = try WeightStore.create(at: dir.sub("s"))
        let sizes = [1, 2, 30, 500, 2000, 2100, 4096, 5000, 70_000]
        for (i, size) in sizes.enumerated() {
            for rank in [0, 1, 2, 5] {
                let shape = rank == 0 ? [] : [size] + Array(repeating: 1, count: rank - 1)
                let count = rank == 0 ? 1 : size
                let b = randomBytes(count, seed: UInt64(i))
                try b.withUnsafeBytes {
                    _ = try store.put("t\(i).\(rank)", dtype: .u8, shape: shape, bytes: $0, codec: .raw)
                }
            }
        }
        let reopened = try WeightStore.open(at: dir.sub("s"))
        for (i, _) in sizes.enumerated() {
            for rank in [0, 1, 2, 5] {
                try reopened.withTensor("t\(i).\(rank)") { bytes, _ in
                    #expect(UInt(bitPattern: bytes.baseAddress!) % 64 == 0, "t\(i).\(rank) at \(bytes.baseAddress!)")
                }
            }
        }
    }

    @Test func expertIndexListsExpertsInOrder() throws {
        let dir = TemporaryDirectory()
        let store = try WeightStore.create(at: dir.sub("s"))
        let b = randomBytes(16, seed: 1)
        try store.write { w in
            for layer in [1, 0] {
                for expert in [10, 2] {
                    for part in ["up", "gate", "down"] {
                        try b.withUnsafeBytes {
                            _ = try w.put(
                                "l\(layer).e\(expert).\(part)", model: "m", dtype: .u8, shape: [16], bytes: $0,
                                expert: ExpertKey(layer: layer, expert: expert, part: part))
                        }
                    }
                }
            }
        }
        let experts = try store.experts(model: "m")
        #expect(experts.map { [$0.layer, $0.expert] } == [[0, 2], [0, 10], [1, 2], [1, 10]])
        #expect(experts[1].parts == ["gate": "l0.e10.gate", "up": "l0.e10.up", "down": "l0.e10.down"])
        #expect(try store.experts(model: "m", layer: 1).count == 2)
        #expect(try store.withSnapshot { try $0.expert(layer: 1, expert: 10, model: "m") }?.parts.count == 3)
        #expect(try store.withSnapshot { try $0.expert(layer: 1, expert: 3, model: "m") } == nil)
        #expect(try store.experts(model: "other").isEmpty)
        #expect(try store.models() == ["m"])
    }

    @Test func metadataAndModelInfo() throws {
        let dir = TemporaryDirectory()
        let store = try WeightStore.create(at: dir.sub("s"))
        #expect(try store.metadata().formatVersion == 2)
        #expect(try store.modelInfo("m") == nil)
        let info = ModelInfo(name: "m", layers: 32, expertsPerLayer: 8, topK: 2, sources: ["a.safetensors"])
        try store.setModelInfo(info)
        #expect(try WeightStore.open(at: dir.sub("s")).modelInfo("m") == info)
        #expect(try store.models() == ["m"])
    }
}

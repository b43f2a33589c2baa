import Foundation
import Testing
import WStoreKernels
import WStoreTestSupport

@testable import WStoreCore
@testable import WeightStore

/// Quantized expert variants (FORMAT.md §8): kernels, write and read paths.
@Suite struct VariantTests {
    /// f32 weights with some exact ties (x.5 after scaling), zeros and sign flips.
    func awkwardFloats(_ n: Int, seed: UInt64) -> [Float] {
        var rng = SplitMix64(seed: seed)
        var x = rng.normals(n, scale: 0.03)
        for i in stride(from: 0, to: n, by: 97) { x[i] = 0 }
        for i in stride(from: 5, to: n, by: 131) { x[i] = -x[i - 1] }  // equal magnitudes, opposite signs
        for b in stride(from: 0, to: n - 32, by: 32 * 7) {  // a block that is all zeros
            for j in 0 ..< 32 { x[b + j] = b % 3 == 0 ? 0 : -0.0 }
        }
        return x
    }

    @Test(arguments: BlockKernels.BlockType.allCases)
    func theDispatchedKernelsGiveTheReferenceBytes(_ type: BlockKernels.BlockType) throws {
        let n = 32 * 2048
        let x = awkwardFloats(n, seed: 3)
        let bf16 = x.map { UInt16(truncatingIfNeeded: $0.bitPattern >> 16) }
        let f16 = x.map { Float16($0).bitPattern }
        for (bytes, ft) in [
            (x.withUnsafeBytes { Array($0) }, BlockKernels.FloatType.f32),
            (f16.withUnsafeBytes { Array($0) }, .f16), (bf16.withUnsafeBytes { Array($0) }, .bf16),
        ] {
            var fast = [UInt8](repeating: 0, count: n / 32 * type.blockBytes), ref = fast
            let badFast = bytes.withUnsafeBytes { s in
                fast.withUnsafeMutableBytes {
                    BlockKernels.quantize(type, from: s.baseAddress!, as: ft, count: n, into: $0.baseAddress!)
                }
            }
            let badRef = bytes.withUnsafeBytes { s in
                ref.withUnsafeMutableBytes {
                    BlockKernels.quantize(
                        type, from: s.baseAddress!, as: ft, count: n, into: $0.baseAddress!, reference: true)
                }
            }
            #expect(badFast == 0 && badRef == 0)
            #expect(fast == ref, "\(type) from \(ft)")
            for out in BlockKernels.FloatType.allCases {
                var a = [UInt8](repeating: 0, count: n * out.size), b = a
                fast.withUnsafeBytes { s in
                    a.withUnsafeMutableBytes {
                        BlockKernels.dequantize(type, from: s.baseAddress!, count: n, into: $0.baseAddress!, as: out)
                    }
                    b.withUnsafeMutableBytes {
                        BlockKernels.dequantize(
                            type, from: s.baseAddress!, count: n, into: $0.baseAddress!, as: out, reference: true)
                    }
                }
                #expect(a == b, "\(type) to \(out)")
            }
        }
    }

    @Test func variantsAreStoredBesideTheExactPartAndReadBack() throws {
        let dir = TemporaryDirectory()
        let store = try WeightStore.create(at: dir.sub("s"))
        let rows = 64, cols = 96
        let bytes = weightLikeBF16(rows * cols, seed: 5)
        let key = ExpertKey(layer: 1, expert: 2, part: "up")
        try bytes.withUnsafeBytes {
            _ = try store.put(
                "l1.e2.up", dtype: .bf16, shape: [rows, cols], bytes: $0, expert: key, variants: [.q8_0, .q4_0])
        }
        // A part whose last dimension is not whole blocks gets none.
        let odd = weightLikeBF16(8 * 40, seed: 6)
        try odd.withUnsafeBytes {
            _ = try store.put(
                "l1.e2.down", dtype: .bf16, shape: [8, 40], bytes: $0,
                expert: ExpertKey(layer: 1, expert: 2, part: "down"), variants: [.q8_0])
        }
        #expect(try store.precisions(layer: 1, expert: 2, part: "up") == [.exact, .q8_0, .q4_0])
        #expect(try store.precisions(layer: 1, expert: 2) == ["up": [.exact, .q8_0, .q4_0], "down": [.exact]])
        #expect(try store.precisions(layer: 1, expert: 3).isEmpty)
        let reader = try WeightStore.open(at: dir.sub("s"))
        for p in ExpertPrecision.variants {
            let expected = try bytes.withUnsafeBytes {
                try VariantBlocks.quantize($0, dtype: .bf16, shape: [rows, cols], precision: p)
            }
            let info = try #require(try reader.variantInfo(p, of: key))
            #expect(info.dtype == p.blockDType && info.shape == [rows, cols] && info.rawSize == expected.count)
            #expect(try reader.readVariantBytes(p, of: key) == expected)
            if info.isRaw {
                try reader.withVariant(p, of: key, verify: true) { b, _ in #expect(Array(b) == expected) }
            }
        }
        #expect(try reader.variants().count == 2)
        #expect(try reader.tensors().count == 2)  // variants are not tensors
        #expect(throws: WStoreError.self) {
            _ = try reader.readVariantBytes(.q8_0, of: ExpertKey(layer: 1, expert: 2, part: "down"))
        }
    }

    @Test func badVariantListsFailWithOneLine() throws {
        #expect(try ExpertPrecision.parseVariants("int8,int4") == [.q8_0, .q4_0])
        #expect(try ExpertPrecision.parseVariants("q4_0, q8_0,q4_0") == [.q4_0, .q8_0])
        for bad in ["", "int3", "q8_0,exact", "q8_0,,q4_0", "fp8"] {
            #expect(throws: WStoreError.self) { _ = try ExpertPrecision.parseVariants(bad) }
        }
    }

    @Test func verifyChecksEveryVariantAndItsPart() throws {
        let dir = TemporaryDirectory()
        let bytes = weightLikeBF16(64 * 64, seed: 9)
        let up = ExpertKey(layer: 0, expert: 0, part: "up"), down = ExpertKey(layer: 0, expert: 0, part: "down")
        var q4: [UInt8] = []
        do {
            let store = try WeightStore.create(at: dir.sub("s"))
            try bytes.withUnsafeBytes {
                _ = try store.put(
                    "up", dtype: .bf16, shape: [64, 64], bytes: $0, codec: .raw, expert: up, variants: [.q8_0, .q4_0])
                _ = try store.put("down", dtype: .bf16, shape: [64, 64], bytes: $0, codec: .raw, expert: down)
                q4 = try VariantBlocks.quantize($0, dtype: .bf16, shape: [64, 64], precision: .q4_0)
            }
            let clean = try store.verify()
            #expect(clean.failures.isEmpty && clean.variantsChecked == 2)
            // A variant whose shape is not its part's, and one of a part that is not indexed.
            try store.write { w in
                try q4.withUnsafeBytes {
                    _ = try w.putVariant(.q4_0, of: down, blocks: $0, shape: [32, 128], codec: .raw)
                    _ = try w.putVariant(
                        .q4_0, of: ExpertKey(layer: 5, expert: 0, part: "up"), blocks: $0, shape: [64, 64])
                }
            }
            let r = try store.verify()
            #expect(r.variantsChecked == 4)
            #expect(r.failures.contains { $0.name == "variant 0/0/down@q4_0" && $0.reason.contains("differs") })
            #expect(
                r.failures.contains {
                    $0.name == "variant 5/0/up@q4_0" && $0.reason.contains("not in the expert index")
                })
            let deleted = try store.write { w in
                [
                    try w.deleteVariant(.q4_0, of: down),
                    try w.deleteVariant(.q4_0, of: ExpertKey(layer: 5, expert: 0, part: "up")),
                ]
            }
            #expect(deleted == [true, true])
            #expect(try store.verify().failures.isEmpty)
        }
        // In a store of its own (no freed copy of the same blocks): damage the q4_0 blocks in the
        // file; verify names that variant, and a copying read refuses it.
        let path = dir.sub("d")
        do {
            let store = try WeightStore.create(at: path)
            try bytes.withUnsafeBytes {
                _ = try store.put(
                    "up", dtype: .bf16, shape: [64, 64], bytes: $0, codec: .raw, expert: up, variants: [.q8_0, .q4_0])
            }
            try store.sync()
        }
        var data = try Data(contentsOf: URL(fileURLWithPath: path + "/data.mdb"))
        let at = try #require(data.firstRange(of: Data(q4[100 ..< 164])))
        data[at.lowerBound + 10] ^= 0x20
        try data.write(to: URL(fileURLWithPath: path + "/data.mdb"))
        let store = try WeightStore.open(at: path)
        let r = try store.verify()
        #expect(r.failures.map(\.name) == ["variant 0/0/up@q4_0"], "\(r.failures)")
        #expect(throws: WStoreError.self) { _ = try store.readVariantBytes(.q4_0, of: up) }
        #expect(try store.readVariantBytes(.q8_0, of: up).count == 64 * 64 / 32 * 34)
    }

    @Test func aStoreWithoutVariantsOpenedReadOnlyHasNone() throws {
        let dir = TemporaryDirectory()
        do {
            let store = try WeightStore.create(at: dir.sub("s"))
            try weightLikeBF16(64, seed: 1).withUnsafeBytes {
                _ = try store.put(
                    "t", dtype: .bf16, shape: [2, 32], bytes: $0, expert: ExpertKey(layer: 0, expert: 0, part: "up"))
            }
        }
        let reader = try WeightStore.open(at: dir.sub("s"))
        #expect(try reader.variants().isEmpty)
        #expect(try reader.precisions(layer: 0, expert: 0, part: "up") == [.exact])
        #expect(try reader.variantInfo(.q8_0, of: ExpertKey(layer: 0, expert: 0, part: "up")) == nil)
    }
}

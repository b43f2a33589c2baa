import Foundation
import Testing
import WStoreCore
import WStoreTestSupport

@testable import KVCache

@Suite struct QuantizationTests {
    func tensor(_ dtype: DType, heads: Int = 2, tokens: Int = 96, dim: Int = 32, seed: UInt64 = 1) throws -> KVTensor {
        var rng = SplitMix64(seed: seed)
        var x = rng.normals(heads * tokens * dim)
        for i in stride(from: 0, to: x.count, by: dim) { x[i] *= 8 }  // an outlier channel, as keys have
        return try KVTensor(floats: x, dtype: dtype, heads: heads, tokens: tokens, headDim: dim)
    }

    /// Each element's error stays within half a quantization step of its group (plus f16 rounding of min and scale).
    @Test(arguments: [
        (8, KIVI.Axis.perChannel), (4, .perChannel), (2, .perChannel), (8, .perToken), (4, .perToken), (2, .perToken),
    ])
    func errorWithinHalfAStep(bits: Int, axis: KIVI.Axis) throws {
        let t = try tensor(.f16)
        let group = 32
        let blob = KIVI.encode(t, bits: bits, axis: axis, options: KIVIOptions(group: group))
        let back = try blob.withUnsafeBytes { try KIVI.decode($0, name: "t") }
        #expect(back.shape == t.shape && back.dtype == t.dtype)
        let x = t.floats(), y = back.floats()
        let levels = Float((1 << bits) - 1)
        let (h, n, d) = (t.heads, t.tokens, t.headDim)
        var checked = 0
        for head in 0 ..< h {
            for tok in 0 ..< n {
                for c in 0 ..< d {
                    // The element's group, recomputed here.
                    var members: [Float] = []
                    if axis == .perChannel {
                        let t0 = tok / group * group
                        for tt in t0 ..< min(n, t0 + group) { members.append(x[(head * n + tt) * d + c]) }
                    } else {
                        let c0 = c / group * group
                        for cc in c0 ..< min(d, c0 + group) { members.append(x[(head * n + tok) * d + cc]) }
                    }
                    let lo = members.min()!, hi = members.max()!
                    let step = (hi - lo) / levels
                    // f16 output rounding (2^-11 relative), f16 min and scale rounding.
                    let bound =
                        step * (0.5 + levels / 1024) + abs(lo) / 1024 + abs(x[(head * n + tok) * d + c]) / 1024 + 1e-6
                    let i = (head * n + tok) * d + c
                    #expect(
                        abs(x[i] - y[i]) <= bound,
                        "bits \(bits) \(axis): element \(i) error \(abs(x[i] - y[i])) > \(bound)")
                    checked += 1
                }
            }
        }
        #expect(checked == x.count)
    }

    @Test func errorShrinksWithBits() throws {
        let t = try tensor(.bf16)
        var last = Double.infinity
        for bits in [2, 4, 8] {
            let blob = KIVI.encode(t, bits: bits, axis: .perToken, options: KIVIOptions())
            let e = KVError.measure(t, try blob.withUnsafeBytes { try KIVI.decode($0, name: "t") })
            #expect(e.relativeRMS < last)
            last = e.relativeRMS
        }
        #expect(last < 0.01)  // int8
    }

    @Test func residualTokensAreExact() throws {
        let t = try tensor(.f32, tokens: 70)
        let blob = KIVI.encode(t, bits: 2, axis: .perChannel, options: KIVIOptions(group: 32, residual: 6))
        let back = try blob.withUnsafeBytes { try KIVI.decode($0, name: "t") }
        #expect(back.slice(tokens: 64 ..< 70) == t.slice(tokens: 64 ..< 70))
        #expect(back.slice(tokens: 0 ..< 64) != t.slice(tokens: 0 ..< 64))
    }

    @Test func chunkRoundTripAndSizes() throws {
        var rng = SplitMix64(seed: 9)
        let layers = try (0 ..< 2).map { _ in
            try KVLayer(
                keys: KVTensor(floats: rng.normals(4 * 256 * 64), dtype: .f16, heads: 4, tokens: 256, headDim: 64),
                values: KVTensor(floats: rng.normals(4 * 256 * 64), dtype: .f16, heads: 4, tokens: 256, headDim: 64))
        }
        let kv = try KVCacheData(layers: layers)
        let lossless = try KVChunk.encode(kv, key: 7, codec: .lossless, kivi: KIVIOptions())
        #expect(try lossless.withUnsafeBytes { try KVChunk.decode($0, key: 7, name: "c") } == kv)
        var sizes: [KVCodec: Int] = [:]
        for codec in [KVCodec.int8, .int4, .int2] {
            let enc = try KVChunk.encode(kv, key: 7, codec: codec, kivi: KIVIOptions())
            sizes[codec] = enc.count
            let back = try enc.withUnsafeBytes { try KVChunk.decode($0, key: 7, name: "c") }
            #expect(back.tokens == kv.tokens && back.layers.count == 2)
        }
        #expect(sizes[.int8]! > sizes[.int4]! && sizes[.int4]! > sizes[.int2]!)
        #expect(Double(kv.byteCount) / Double(sizes[.int4]!) >= 3.5)
    }
}

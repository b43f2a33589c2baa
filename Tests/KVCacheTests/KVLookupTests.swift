import Dispatch
import Foundation
import Synchronization
import Testing
import WStoreCore
import WStoreTestSupport

@testable import KVCache

/// Lookups that decode straight into the caller's buffers, the raw codec, last-use stamps
/// kept in memory, and readers running beside a writer.
@Suite struct KVLookupTests {
    func randomCache(
        tokens: Int, layers: Int = 3, heads: Int = 2, dim: Int = 16, dtype: DType = .bf16, seed: UInt64 = 1
    ) throws -> KVCacheData {
        var rng = SplitMix64(seed: seed)
        return try KVCacheData(
            layers: (0 ..< layers).map { _ in
                try KVLayer(
                    keys: KVTensor(
                        floats: rng.normals(heads * tokens * dim), dtype: dtype, heads: heads, tokens: tokens,
                        headDim: dim),
                    values: KVTensor(
                        floats: rng.normals(heads * tokens * dim), dtype: dtype, heads: heads, tokens: tokens,
                        headDim: dim))
            })
    }

    /// Reads element rows of `kv` back out of engine-layout buffers `[tokens][heads][dim]`.
    func engineLayout(_ kv: KVCacheData, k: UnsafeRawBufferPointer, v: UnsafeRawBufferPointer, layer: Int, tokens: Int)
        -> (KVTensor, KVTensor)
    {
        let t0 = kv.layers[0].keys, row = t0.headDim * t0.elementSize, stride = t0.heads * row
        func read(_ p: UnsafeRawBufferPointer) -> KVTensor {
            var out = [UInt8](repeating: 0, count: t0.heads * tokens * row)
            for h in 0 ..< t0.heads {
                for t in 0 ..< tokens {
                    for b in 0 ..< row {
                        out[(h * tokens + t) * row + b] = p[layer * tokens * stride + t * stride + h * row + b]
                    }
                }
            }
            return try! KVTensor(dtype: t0.dtype, heads: t0.heads, tokens: tokens, headDim: t0.headDim, bytes: out)
        }
        return (read(UnsafeRawBufferPointer(rebasing: k[...])), read(UnsafeRawBufferPointer(rebasing: v[...])))
    }

    @Test(arguments: [KVCodec.lossless, .raw, .int4])
    func lookupIntoEngineBuffersEqualsTheSwiftLookup(codec: KVCodec) throws {
        let tmp = TemporaryDirectory("into-\(codec)")
        let dir = tmp.path
        var o = KVStore.Options()
        o.chunkTokens = 32
        o.codec = codec
        let store = try KVStore.create(at: dir + "/kv", options: o)
        let tokens = (0 ..< 100).map { UInt32($0 * 7) }
        let kv = try randomCache(tokens: 100)
        // Store from engine-layout buffers ([tokens][heads][dim] per layer), 3 whole chunks.
        let row = 16 * 2, stride = 2 * row
        var kbuf = [UInt8](repeating: 0, count: 3 * 100 * stride), vbuf = kbuf
        for l in 0 ..< 3 {
            for h in 0 ..< 2 {
                for t in 0 ..< 100 {
                    for b in 0 ..< row {
                        kbuf[l * 100 * stride + t * stride + h * row + b] =
                            kv.layers[l].keys.bytes[(h * 100 + t) * row + b]
                        vbuf[l * 100 * stride + t * stride + h * row + b] =
                            kv.layers[l].values.bytes[(h * 100 + t) * row + b]
                    }
                }
            }
        }
        func views(_ k: UnsafeMutableRawBufferPointer, _ v: UnsafeMutableRawBufferPointer) -> [KVLayerView] {
            (0 ..< 3).map { l in
                KVLayerView(
                    keys: k.baseAddress! + l * 100 * stride, values: v.baseAddress! + l * 100 * stride,
                    dtype: .bf16, kvHeads: 2, headDim: 16, tokenStride: stride)
            }
        }
        let stored = try kbuf.withUnsafeMutableBytes { k in
            try vbuf.withUnsafeMutableBytes { v in try store.store(tokens: tokens, model: "m", from: views(k, v)) }
        }
        #expect(stored.cachedTokens == 96 && stored.result.written == 3)
        #expect(try store.probe(tokens: tokens, model: "m") == 96)
        let swift = try store.lookup(tokens: tokens, model: "m")
        #expect(swift.tokens == 96 && swift.damage == nil)
        if codec != .int4 { #expect(swift.kv == kv.slice(tokens: 0 ..< 96)) }
        // Into fresh engine buffers, poisoned: the prefix rows are written, the rest untouched.
        var k2 = [UInt8](repeating: 0xA5, count: kbuf.count), v2 = k2
        let got = try k2.withUnsafeMutableBytes { k in
            try v2.withUnsafeMutableBytes { v in try store.lookup(tokens: tokens, model: "m", into: views(k, v)) }
        }
        #expect(got.tokens == 96 && got.chunks == 3 && got.damage == nil)
        for l in 0 ..< 3 {
            let (ek, ev) = k2.withUnsafeBytes { k in
                v2.withUnsafeBytes { v in engineLayout(kv, k: k, v: v, layer: l, tokens: 100) }
            }
            #expect(ek.slice(tokens: 0 ..< 96) == swift.kv!.layers[l].keys)
            #expect(ev.slice(tokens: 0 ..< 96) == swift.kv!.layers[l].values)
            #expect(k2[l * 100 * stride + 96 * stride ..< (l + 1) * 100 * stride].allSatisfy { $0 == 0xA5 })
        }
        // Buffers of another shape are refused before anything is written.
        #expect(throws: WStoreError.self) {
            try k2.withUnsafeMutableBytes { k in
                try v2.withUnsafeMutableBytes { v in
                    _ = try store.lookup(
                        tokens: tokens, model: "m",
                        into: [
                            KVLayerView(
                                keys: k.baseAddress!, values: v.baseAddress!, dtype: .bf16, kvHeads: 4, headDim: 8,
                                tokenStride: stride)
                        ])
                }
            }
        }
    }

    @Test func rawStoresAreVersionThreeOthersStayVersionTwo() throws {
        let tmp = TemporaryDirectory("version")
        let dir = tmp.path
        for codec in [KVCodec.raw, .lossless] {
            var o = KVStore.Options()
            o.codec = codec
            _ = try KVStore.create(at: dir + "/\(codec)", options: o)
            let settings = try KVStore.open(at: dir + "/\(codec)", readOnly: true).settingsJSON()
            #expect(settings.contains("\"format_version\":\(codec == .raw ? 3 : 2)"), "\(settings)")
        }
    }

    /// A lookup writes nothing; its last uses reach the file with the next store (or a flush).
    @Test func lastUsesAreFoldedInByTheNextWriter() throws {
        let tmp = TemporaryDirectory("stamps")
        let dir = tmp.path
        var o = KVStore.Options()
        o.chunkTokens = 4
        o.maxChunks = 2
        let store = try KVStore.create(at: dir + "/kv", options: o)
        let a: [UInt32] = [1, 2, 3, 4], b: [UInt32] = [5, 6, 7, 8], c: [UInt32] = [9, 10, 11, 12]
        try store.store(tokens: a, model: "m", kv: try randomCache(tokens: 4))
        try store.store(tokens: b, model: "m", kv: try randomCache(tokens: 4))
        let before = try Data(contentsOf: URL(fileURLWithPath: dir + "/kv/data.mdb"))
        #expect(try store.lookup(tokens: a, model: "m").tokens == 4)  // a is now newer than b, in memory only
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir + "/kv/data.mdb")) == before)
        try store.store(tokens: c, model: "m", kv: try randomCache(tokens: 4))  // folds a's use in, then evicts b
        #expect(try store.probe(tokens: a, model: "m") == 4)
        #expect(try store.probe(tokens: b, model: "m") == 0)
        // flushUseStamps writes pending uses on its own.
        #expect(try store.lookup(tokens: c, model: "m").tokens == 4)
        try store.flushUseStamps()
        let counters = store.lookupCounters()
        #expect(counters.lookups == 2 && counters.hitTokens == 8)
    }

    /// Four readers look up while a writer adds chunks: every lookup returns a whole prefix
    /// equal to what was stored.
    @Test func readersRunBesideAWriter() throws {
        let tmp = TemporaryDirectory("parallel")
        let dir = tmp.path
        var o = KVStore.Options()
        o.chunkTokens = 16
        let store = try KVStore.create(at: dir + "/kv", options: o)
        let tokens = (0 ..< 256).map { UInt32($0) }
        let kv = try randomCache(tokens: 256, layers: 2)
        try store.store(tokens: Array(tokens[0 ..< 64]), model: "m", kv: kv.slice(tokens: 0 ..< 64))
        let problems = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: 5) { w in
            do {
                if w == 0 {
                    for n in stride(from: 80, through: 256, by: 16) {
                        try store.store(tokens: Array(tokens[0 ..< n]), model: "m", kv: kv.slice(tokens: 0 ..< n))
                    }
                    return
                }
                for _ in 0 ..< 30 {
                    let found = try store.lookup(tokens: tokens, model: "m")
                    if found.tokens < 64 || found.kv != kv.slice(tokens: 0 ..< found.tokens) {
                        problems.withLock {
                            $0.append(
                                "reader \(w): \(found.tokens) tokens, equal: \(found.kv == kv.slice(tokens: 0 ..< found.tokens))"
                            )
                        }
                    }
                }
            } catch {
                problems.withLock { $0.append("worker \(w): \(error)") }
            }
        }
        #expect(problems.withLock { $0 } == [])
        #expect(try store.probe(tokens: tokens, model: "m") == 256)
    }
}

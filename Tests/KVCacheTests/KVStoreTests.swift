import Foundation
import Testing
import WStoreTestSupport

@testable import KVCache
@testable import WStoreCore

@Suite struct KVStoreTests {
    /// A small KV cache for `tokens` tokens whose values depend on the token ids (so prefixes agree).
    func cache(_ tokens: [UInt32], layers: Int = 2, heads: Int = 2, dim: Int = 8) throws -> KVCacheData {
        try KVCacheData(
            layers: (0 ..< layers).map { l in
                var k = [Float](), v = [Float]()
                for h in 0 ..< heads {
                    for t in tokens {
                        for c in 0 ..< dim {
                            k.append(Float(t % 1000) + Float(c) * 0.01 + Float(h + l))
                            v.append(-Float(t % 1000) - Float(c) * 0.01 - Float(h + l))
                        }
                    }
                }
                return try KVLayer(
                    keys: KVTensor(floats: k, dtype: .f32, heads: heads, tokens: tokens.count, headDim: dim),
                    values: KVTensor(floats: v, dtype: .f32, heads: heads, tokens: tokens.count, headDim: dim))
            })
    }

    func options(chunk: Int = 4, maxChunks: Int = 0) -> KVStore.Options {
        var o = KVStore.Options()
        o.chunkTokens = chunk
        o.maxChunks = maxChunks
        return o
    }

    @Test func sharedAndDivergingPrefixes() throws {
        let tmp = TemporaryDirectory("prefix")
        let dir = tmp.path
        let store = try KVStore.create(at: dir + "/kv", options: options())
        let a: [UInt32] = Array(1 ... 14)  // 3 whole chunks + 2 tokens
        let r = try store.store(tokens: a, model: "m", kv: try cache(a))
        #expect(r.written == 3 && r.present == 0)
        // Same first 8 tokens, then different.
        let b: [UInt32] = Array(1 ... 8) + [99, 98, 97, 96, 95, 94, 93, 92]
        let found = try store.lookup(tokens: b, model: "m")
        #expect(found.tokens == 8 && found.chunks == 2)
        #expect(found.kv == (try cache(Array(a[0 ..< 8]))))
        let r2 = try store.store(tokens: b, model: "m", kv: try cache(b))
        #expect(r2.written == 2 && r2.present == 2)
        #expect(try store.lookup(tokens: b, model: "m").tokens == 16)
        #expect(try store.lookup(tokens: a, model: "m").tokens == 12)
        // A difference in the first chunk finds nothing; so does another model or salt.
        #expect(try store.lookup(tokens: [0] + Array(a.dropFirst()), model: "m").tokens == 0)
        #expect(try store.lookup(tokens: a, model: "other").tokens == 0)
        #expect(try store.lookup(tokens: a, model: "m", salt: "lora-1").tokens == 0)
        // A chunk with the same tokens at another position is a different chunk.
        #expect(try store.lookup(tokens: Array(a[4 ..< 12]) + Array(a[0 ..< 4]), model: "m").tokens == 0)
        let stats = try store.stats()
        #expect(stats.chunks == 5 && stats.leaves == 2 && stats.chunksByModel == ["m": 5])
        // Reopened, it still answers.
        let again = try KVStore.open(at: dir + "/kv", readOnly: true)
        #expect(try again.lookup(tokens: b, model: "m").kv == (try cache(b)).slice(tokens: 0 ..< 16))
    }

    @Test(arguments: [KVCodec.lossless, .raw])
    func chunksEncodedAheadOfTheirWriteComeBackExact(_ codec: KVCodec) throws {
        // 2 MiB chunks (writeback starts after each), the first two stored before: the three
        // missing ones encode one ahead of the one being written.
        let tmp = TemporaryDirectory("pipeline")
        var o = options(chunk: 256)
        o.codec = codec
        let store = try KVStore.create(at: tmp.path + "/kv", options: o)
        let count = 5 * 256 + 7
        let tokens: [UInt32] = (0 ..< count).map { (i: Int) -> UInt32 in UInt32(i) &* 7 &+ 1 }
        let kv = try cache(tokens, layers: 2, heads: 4, dim: 128)
        let first = try store.store(tokens: Array(tokens[..<512]), model: "m", kv: kv.slice(tokens: 0 ..< 512))
        #expect(first.written == 2)
        let r = try store.store(tokens: tokens, model: "m", kv: kv)
        #expect(r.written == 3 && r.present == 2)
        let found = try store.lookup(tokens: tokens, model: "m")
        #expect(found.chunks == 5)
        #expect(found.kv == kv.slice(tokens: 0 ..< 5 * 256))
    }

    @Test func evictsLeastRecentlyUsedLeavesFirst() throws {
        let tmp = TemporaryDirectory("evict")
        let dir = tmp.path
        let store = try KVStore.create(at: dir + "/kv", options: options(maxChunks: 4))
        let a: [UInt32] = Array(1 ... 12)  // chunks a0 a1 a2
        try store.store(tokens: a, model: "m", kv: try cache(a))
        let b: [UInt32] = Array(101 ... 104)  // chunk b0
        try store.store(tokens: b, model: "m", kv: try cache(b))
        // Use a's first chunk: its chain a0 is now newer than b0, but a1, a2 are older still.
        #expect(try store.lookup(tokens: Array(a[0 ..< 4]), model: "m").tokens == 4)
        // A fifth chunk forces one eviction: the least recently used leaf is a2 (a0 and a1 are parents).
        let c: [UInt32] = Array(201 ... 204)
        let r = try store.store(tokens: c, model: "m", kv: try cache(c))
        #expect(r.evicted == 1)
        #expect(try store.lookup(tokens: a, model: "m").tokens == 8)  // a2 went; this touches a0, a1
        #expect(try store.lookup(tokens: b, model: "m").tokens == 4)
        // Next: the LRU leaf is now c0 (b0 was just used, a1 just used and a leaf again).
        let d: [UInt32] = Array(301 ... 304)
        try store.store(tokens: d, model: "m", kv: try cache(d))
        #expect(try store.lookup(tokens: c, model: "m").tokens == 0)
        #expect(try store.lookup(tokens: a, model: "m").tokens == 8)
        // A parent is never evicted before its children: every cached chunk is reachable.
        let s = try store.stats()
        #expect(s.chunks == 4)
    }

    @Test func byteBudgetHolds() throws {
        let tmp = TemporaryDirectory("budget")
        let dir = tmp.path
        var o = options()
        o.budgetBytes = 6000
        let store = try KVStore.create(at: dir + "/kv", options: o)
        for i in 0 ..< 20 {
            let t: [UInt32] = (0 ..< 8).map { UInt32(i * 100 + $0) }
            try store.store(tokens: t, model: "m", kv: try cache(t))
            #expect(try store.stats().storedBytes <= 6000)
        }
        #expect(try store.stats().chunks > 0)
    }

    @Test func aChunkUnderAnotherPrefixIsCorruptAndTheIndexChecksOut() throws {
        let tmp = TemporaryDirectory("swap")
        let dir = tmp.path
        var o = options()
        o.budgetBytes = 9000  // evictions, so the index has been rewritten many times
        let store = try KVStore.create(at: dir + "/kv", options: o)
        var prompts: [[UInt32]] = []
        for i in 0 ..< 12 {
            let t: [UInt32] = (0 ..< 8).map { UInt32(i % 3 * 100 + (i > 5 ? 50 : 0) + $0) }
            try store.store(tokens: t, model: "m", kv: try cache(t))
            _ = try store.lookup(tokens: t, model: "m")
            prompts.append(t)
        }
        #expect(try store.verify().isEmpty)
        // Swap the chunks of two cached prefixes.
        let cached = prompts.filter { (try? store.cachedChunks(tokens: $0, model: "m")) == 2 }
        let k1 = PrefixKey.chain(tokens: cached[0], chunkTokens: 4, model: "m")[0]
        let k2 = try #require(
            cached.map { PrefixKey.chain(tokens: $0, chunkTokens: 4, model: "m")[0] }.first { $0 != k1 })
        try store.env.write { txn in
            let v1 = Array(try txn.get(store.chunks, PrefixKey.bytes(k1))!),
                v2 = Array(try txn.get(store.chunks, PrefixKey.bytes(k2))!)
            try v2.withUnsafeBytes { try txn.put(store.chunks, PrefixKey.bytes(k1), $0) }
            try v1.withUnsafeBytes { try txn.put(store.chunks, PrefixKey.bytes(k2), $0) }
        }
        // The swapped chunk ends the prefix before it: nothing of another prefix is returned.
        let found = try store.lookup(tokens: cached[0], model: "m")
        #expect(found.tokens == 0 && found.kv == nil)
        #expect("\(try #require(found.damage))".contains("not the chunk of this key"))
        #expect(Set(try store.verify().map(\.key)).isSuperset(of: [k1, k2]))
        // An index entry without its chunk is found too.
        try store.env.write { txn in _ = try txn.delete(store.chunks, PrefixKey.bytes(k1)) }
        #expect(try store.verify().contains { $0.error.contains("has no chunk") })
    }

    @Test func aDamagedFreeListIsRefusedBeforeTheFirstWrite() throws {
        let tmp = TemporaryDirectory("freelist")
        let dir = tmp.path
        do {
            var o = options()
            o.maxChunks = 3  // evictions free pages, so the free list has entries
            let store = try KVStore.create(at: dir + "/kv", options: o)
            for i in 0 ..< 10 {
                let t: [UInt32] = (0 ..< 8).map { UInt32(i * 100 + $0) }
                try store.store(tokens: t, model: "m", kv: try cache(t))
            }
        }
        let file = dir + "/kv/data.mdb"
        let meta = try LMDBFile.readMeta(path: file)
        #expect(meta.free.root != UInt64.max)
        var data = try Data(contentsOf: URL(fileURLWithPath: file))
        // The free list's root leaf (one page here); its first node's data is a page list:
        // make its count say far more pages than it holds.
        let page = Int(meta.free.root) * meta.pageSize
        #expect(data[page + 10] & 0x02 != 0)
        let node = page + Int(data[page + 16]) | Int(data[page + 17]) << 8
        let ksize = Int(data[node + 6]) | Int(data[node + 7]) << 8
        var at = node + 8 + ksize
        if data[node + 4] & 0x01 != 0 {  // F_BIGDATA: the list is on an overflow page
            let pg = data[at ..< at + 8].withUnsafeBytes {
                Int(UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)))
            }
            at = pg * meta.pageSize + 16
        }
        data[at + 3] ^= 0x10
        try data.write(to: URL(fileURLWithPath: file))
        #expect(throws: WStoreError.self) { _ = try KVStore.open(at: dir + "/kv") }
        #expect(throws: WStoreError.self) { _ = try KVStore.open(at: dir + "/kv", readOnly: true) }
    }

    @Test func corruptChunkEndsThePrefixAndIsReported() throws {
        let tmp = TemporaryDirectory("corrupt")
        let dir = tmp.path
        for codec in [KVCodec.lossless, .int4, .raw] {
            var o = options(chunk: 64)
            o.codec = codec
            let path = dir + "/kv-\(codec)"
            var store: KVStore? = try KVStore.create(at: path, options: o)
            var rng = SplitMix64(seed: 3)
            let tokens: [UInt32] = (0 ..< 128).map { UInt32($0) }
            let kv = try KVCacheData(layers: [
                KVLayer(
                    keys: KVTensor(floats: rng.normals(2 * 128 * 16), dtype: .f16, heads: 2, tokens: 128, headDim: 16),
                    values: KVTensor(floats: rng.normals(2 * 128 * 16), dtype: .f16, heads: 2, tokens: 128, headDim: 16)
                )
            ])
            try store!.store(tokens: tokens, model: "m", kv: kv)
            let intact = try store!.lookup(tokens: tokens, model: "m").kv!
            store = nil
            // Flip one byte of the second chunk's payload in the file.
            let key = PrefixKey.chain(tokens: tokens, chunkTokens: 64, model: "m")[1]
            let chunkBytes = try KVStore.open(at: path, readOnly: true).rawChunk(key)!
            let needle = Array(chunkBytes.suffix(48).prefix(32))
            var file = try Data(contentsOf: URL(fileURLWithPath: path + "/data.mdb"))
            let at = try #require(file.firstRange(of: Data(needle)))
            file[at.lowerBound + 5] ^= 0x5A
            try file.write(to: URL(fileURLWithPath: path + "/data.mdb"))
            let reopened = try KVStore.open(at: path)
            // The intact first chunk is returned, the damage reported, never the damaged bytes.
            let found = try reopened.lookup(tokens: tokens, model: "m")
            #expect(found.tokens == 64 && found.chunks == 1, "\(codec)")
            #expect(found.kv == intact.slice(tokens: 0 ..< 64), "\(codec)")
            let damage = try #require(found.damage, "\(codec)")
            #expect("\(damage)".contains(String(key, radix: 16)), "\(damage)")
            // Into the caller's buffers: the same.
            var k = [UInt8](repeating: 0, count: 128 * 2 * 16 * 2), v = k
            let delivered = try k.withUnsafeMutableBytes { kb in
                try v.withUnsafeMutableBytes { vb in
                    try reopened.lookup(
                        tokens: tokens, model: "m",
                        into: [
                            KVLayerView(
                                keys: kb.baseAddress!, values: vb.baseAddress!, dtype: .f16, kvHeads: 2, headDim: 16,
                                tokenStride: 2 * 16 * 2)
                        ])
                }
            }
            #expect(delivered.tokens == 64 && delivered.damage != nil, "\(codec)")
            #expect(try reopened.verify().count == 1)
        }
    }

    @Test func oneProcessOpensAStoreOnceAndReadOnlyHandlesDoNotWrite() throws {
        let tmp = TemporaryDirectory("shared")
        let dir = tmp.path
        let writer = try KVStore.create(at: dir + "/kv", options: options())
        let a: [UInt32] = Array(1 ... 8)
        _ = try writer.store(tokens: a, model: "m", kv: try cache(a))
        let reader = try KVStore.open(at: dir + "/kv", readOnly: true)
        #expect(reader.env === writer.env)  // lmdb.h: never open one environment twice in a process
        #expect(try reader.lookup(tokens: a, model: "m").tokens == 8)
        #expect(throws: WStoreError.self) { _ = try reader.store(tokens: a, model: "m", kv: try cache(a)) }
        #expect(try writer.stats() == reader.stats())
    }

    @Test func refusesWhatIsNotAStore() throws {
        let tmp = TemporaryDirectory("notastore")
        let dir = tmp.path
        #expect(throws: WStoreError.self) { _ = try KVStore.open(at: dir) }
        _ = try KVStore.create(at: dir + "/kv")
        #expect(throws: WStoreError.self) { _ = try KVStore.create(at: dir + "/kv") }
    }

    @Test func settingsRecordIsTheJSONObjectOfTheSpec() throws {
        let tmp = TemporaryDirectory("settings")
        var options = KVStore.Options()
        (options.chunkTokens, options.budgetBytes, options.codec) = (128, 1 << 20, .int4)
        let kv = try KVStore.create(at: tmp.sub("kv"), options: options)
        let stored = try kv.env.withRead { try $0.get(kv.meta, Array("settings".utf8)).map { Array($0) } }
        // format-spec/KV.md §2: one JSON object, keys sorted, as a generic JSON writer writes it,
        // sealed to its key (version 2; only a raw-codec store is written as version 3).
        let opened = try #require(stored).withUnsafeBytes { Sealed.openJSON($0, key: Array("settings".utf8)) }
        let object: [String: Any] = [
            "format": "wstore-kv", "format_version": 2, "chunk_tokens": 128, "budget_bytes": 1 << 20, "max_chunks": 0,
            "codec": "int4", "kivi_group": options.kivi.group, "kivi_residual": options.kivi.residual,
        ]
        #expect(opened == [UInt8](try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])))
        #expect(try KVStore.open(at: tmp.sub("kv"), readOnly: true).options.codec == .int4)
    }
}

import Foundation
import Testing
import WStoreCore
import WStoreRemote
import WStoreTestSupport

@testable import KVCache

/// KV stores sharing a remote tier on real Redis servers the tests start.
@Suite(.enabled(if: RedisServer.available, "redis-server not found after `make deps`"))
struct RemoteTierTests {
    /// KV for `tokens` whose values depend on the token ids and positions (so prefixes agree).
    static func cache(_ tokens: [UInt32], layers: Int = 2, heads: Int = 2, dim: Int = 16, dtype: DType = .bf16) throws
        -> KVCacheData
    {
        var rng = SplitMix64(seed: 5)
        let noise = rng.normals(heads * dim)
        return try KVCacheData(
            layers: (0 ..< layers).map { l in
                var k = [Float](), v = [Float]()
                for h in 0 ..< heads {
                    for (pos, t) in tokens.enumerated() {
                        for c in 0 ..< dim {
                            let base = Float(t % 97) * 0.05 + noise[h * dim + c] + Float(l)
                            k.append(base + Float(pos % 7) * 0.01)
                            v.append(-base * 0.5)
                        }
                    }
                }
                return try KVLayer(
                    keys: KVTensor(floats: k, dtype: dtype, heads: heads, tokens: tokens.count, headDim: dim),
                    values: KVTensor(floats: v, dtype: dtype, heads: heads, tokens: tokens.count, headDim: dim))
            })
    }

    static func options(chunk: Int = 8, codec: KVCodec = .lossless) -> KVStore.Options {
        var o = KVStore.Options()
        o.chunkTokens = chunk
        o.codec = codec
        return o
    }

    static func remote(_ urls: [String], namespace: String = "test:") -> RemoteTierOptions {
        var r = RemoteTierOptions(urls: urls)
        r.namespace = namespace
        r.timeout = .milliseconds(300)
        r.retryInitial = .milliseconds(20)
        r.retryMax = .milliseconds(100)
        r.warnings = false
        return r
    }

    /// A prompt of `chunks` whole chunks (and 3 more tokens), distinct per `seed`.
    static func prompt(_ seed: UInt32, chunks: Int, chunk: Int = 8) -> [UInt32] {
        (0 ..< UInt32(chunks * chunk + 3)).map { seed &* 1000 &+ $0 }
    }

    /// A Redis server of the test's own, a temporary directory, and node A, which stored a
    /// prompt of `chunks` chunks (distinct per `seed`) and sent all of it to Redis.
    final class StoredPrompt {
        let server: RedisServer, tmp: TemporaryDirectory, remote: RemoteTierOptions
        let a: KVStore, tokens: [UInt32], kv: KVCacheData
        var dir: String { tmp.path }
        /// The Redis keys of the prompt's chunks.
        var redisKeys: [String] {
            PrefixKey.chain(tokens: tokens, chunkTokens: 8, model: "m").map { "test:\(hex($0))" }
        }

        init(_ name: String, seed: UInt32, chunks: Int) throws {
            server = try RedisServer()
            tmp = TemporaryDirectory(name)
            remote = RemoteTierTests.remote([server.url])
            a = try KVStore.create(at: tmp.path + "/a", options: RemoteTierTests.options(), remote: remote)
            tokens = RemoteTierTests.prompt(seed, chunks: chunks)
            kv = try RemoteTierTests.cache(tokens)
            try a.store(tokens: tokens, model: "m", kv: kv)
            guard a.flushRemote() else { throw WStoreError.invalidArgument("node A's chunks did not reach Redis") }
        }

        /// Another node: an empty local store `name` on the same remote tier.
        func node(_ name: String) throws -> KVStore {
            try KVStore.create(at: dir + "/" + name, options: RemoteTierTests.options(), remote: remote)
        }
    }

    @Test func twoNodesShareAPromptLosslessly() throws {
        let server = try RedisServer()
        let tmp = TemporaryDirectory("remote-nodes")
        let dir = tmp.path
        let r = RemoteTierTests.remote([server.url])
        let a = try KVStore.create(at: dir + "/a", options: RemoteTierTests.options(), remote: r)
        let b = try KVStore.create(at: dir + "/b", options: RemoteTierTests.options(), remote: r)
        let p = RemoteTierTests.prompt(1, chunks: 3)
        let kv = try RemoteTierTests.cache(p)
        #expect(try a.store(tokens: p, model: "m", kv: kv).written == 3)
        #expect(a.flushRemote())
        #expect(a.tierStats()!.sentChunks == 3 && a.tierStats()!.bytesSent > 0)

        // B has nothing locally: all three chunks come from Redis, bit-exact, and are kept locally.
        let found = try b.lookup(tokens: p, model: "m")
        #expect(found.chunks == 3 && found.remoteChunks == 3)
        #expect(found.kv == kv.slice(tokens: 0 ..< 24))
        #expect(try b.stats().chunks == 3)
        let again = try b.lookup(tokens: p, model: "m")
        #expect(again.chunks == 3 && again.remoteChunks == 0)
        var s = b.tierStats()!
        #expect(s.remoteHitChunks == 3 && s.localHitChunks == 3 && s.damagedRemote == 0 && s.remoteErrors == 0)
        #expect(
            s.bytesFetched
                == (try (0 ..< 3).map {
                    try a.rawChunk(PrefixKey.chain(tokens: p, chunkTokens: 8, model: "m")[$0])!.count
                }.reduce(0, +)))

        // B extends the prompt: it sends only the two new chunks; A finds 3 locally, 2 remotely.
        let q = Array(p.prefix(24)) + RemoteTierTests.prompt(2, chunks: 2)
        let kvq = try RemoteTierTests.cache(q)
        #expect(try b.store(tokens: q, model: "m", kv: kvq).written == 2)
        #expect(b.flushRemote())
        s = b.tierStats()!
        #expect(s.sentChunks == 2 && s.alreadyRemote == 0)
        let fromA = try a.lookup(tokens: q, model: "m")
        #expect(fromA.chunks == 5 && fromA.remoteChunks == 2 && fromA.kv == kvq.slice(tokens: 0 ..< 40))

        // A third node that computed the same prompt itself does not send chunks Redis already holds.
        let c = try KVStore.create(at: dir + "/c", options: RemoteTierTests.options(), remote: r)
        try c.store(tokens: p, model: "m", kv: kv)
        #expect(c.flushRemote())
        #expect(c.tierStats()!.alreadyRemote == 3 && c.tierStats()!.sentChunks == 0 && c.tierStats()!.bytesSent == 0)
        // Other models and namespaces do not see these chunks.
        #expect(try c.lookup(tokens: q, model: "other").chunks == 0)
        let d = try KVStore.create(
            at: dir + "/d", options: RemoteTierTests.options(),
            remote: RemoteTierTests.remote([server.url], namespace: "other:"))
        #expect(try d.lookup(tokens: q, model: "m").chunks == 0)
    }

    @Test func clusterInt4WithinBoundAndReshardedMidRun() throws {
        let cluster = try RedisCluster()
        let tmp = TemporaryDirectory("remote-cluster")
        let dir = tmp.path
        let r = RemoteTierTests.remote(cluster.urls)
        let o = RemoteTierTests.options(codec: .int4)
        let a = try KVStore.create(at: dir + "/a", options: o, remote: r)
        let b = try KVStore.create(at: dir + "/b", options: o, remote: r)
        var prompts: [[UInt32]] = (0 ..< 24).map { RemoteTierTests.prompt(UInt32(10 + $0), chunks: 3) }
        for p in prompts { try a.store(tokens: p, model: "m", kv: try RemoteTierTests.cache(p)) }
        #expect(a.flushRemote())
        #expect(a.tierStats()!.sentChunks == 72)
        for p in prompts {
            let exact = try RemoteTierTests.cache(p).slice(tokens: 0 ..< 24)
            let found = try b.lookup(tokens: p, model: "m")
            #expect(found.remoteChunks == 3)
            // The very bytes A keeps: B decodes the same int4 values A does...
            #expect(found.kv == (try a.lookup(tokens: p, model: "m").kv))
            // ...within int4's bound: half a step of the value range, plus f16 rounding of min and scale.
            for (x, y) in zip(exact.layers, found.kv!.layers) {
                for (tx, ty) in [(x.keys, y.keys), (x.values, y.values)] {
                    let xf = tx.floats(), yf = ty.floats()
                    let range = xf.max()! - xf.min()!, top = xf.map(abs).max()!
                    let bound = range / 15 * 0.5 * 1.01 + top / 256
                    #expect(zip(xf, yf).allSatisfy { abs($0 - $1) <= bound })
                }
            }
        }
        // Move 500 slots while a fresh node keeps storing and looking up.
        let reshard = try cluster.startReshard(from: 0, to: 1, slots: 500)
        let c = try KVStore.create(at: dir + "/c", options: o, remote: r)
        var round = 0
        repeat {
            let p = RemoteTierTests.prompt(UInt32(100 + round), chunks: 2)
            try c.store(tokens: p, model: "m", kv: try RemoteTierTests.cache(p))
            prompts.append(p)
            #expect(try c.lookup(tokens: prompts[round % 24], model: "m").chunks == 3)
            round += 1
        } while reshard.isRunning && round < 2000
        print("note: \(round) store+lookup rounds ran while 500 slots moved")
        reshard.waitUntilExit()
        #expect(reshard.terminationStatus == 0)
        #expect(c.flushRemote())
        #expect(c.tierStats()!.remoteErrors == 0 && c.tierStats()!.unsentChunks == 0)
        // Every chunk is still found, by a node that has none of them.
        let d = try KVStore.create(at: dir + "/d", options: o, remote: r)
        for p in prompts {
            #expect(try d.lookup(tokens: p, model: "m").remoteChunks == (p.count - 3) / 8)
        }
        #expect(d.tierStats()!.remoteErrors == 0 && d.tierStats()!.damagedRemote == 0)
    }

    @Test func serverKilledMidRunThenRestarted() throws {
        let server = try RedisServer()
        let tmp = TemporaryDirectory("remote-kill")
        let dir = tmp.path
        let r = RemoteTierTests.remote([server.url])
        let a = try KVStore.create(at: dir + "/a", options: RemoteTierTests.options(), remote: r)
        let b = try KVStore.create(at: dir + "/b", options: RemoteTierTests.options(), remote: r)
        let p1 = RemoteTierTests.prompt(1, chunks: 3)
        try a.store(tokens: p1, model: "m", kv: try RemoteTierTests.cache(p1))
        #expect(a.flushRemote())
        #expect(try b.lookup(tokens: p1, model: "m").remoteChunks == 3)

        server.kill()
        // Lookups go on from the local tier; the remote part is a miss, not an error.
        #expect(try b.lookup(tokens: p1, model: "m").chunks == 3)
        let p2 = RemoteTierTests.prompt(2, chunks: 2)
        #expect(try b.lookup(tokens: p2, model: "m").chunks == 0)
        // Stores land locally; what could not be sent is counted.
        #expect(try b.store(tokens: p2, model: "m", kv: try RemoteTierTests.cache(p2)).written == 2)
        #expect(b.flushRemote())
        var s = b.tierStats()!
        #expect(s.remoteErrors >= 1 && !s.connected && s.unsentChunks == 2 && s.lastError != nil)
        #expect(try b.lookup(tokens: p2, model: "m").chunks == 2)

        // Back (empty: no persistence): after the backoff the tier reconnects by itself.
        try server.start()
        Thread.sleep(forTimeInterval: 0.15)
        let p3 = RemoteTierTests.prompt(3, chunks: 2)
        try b.store(tokens: p3, model: "m", kv: try RemoteTierTests.cache(p3))
        #expect(b.flushRemote())
        s = b.tierStats()!
        #expect(s.connected && s.reconnects >= 1 && s.sentChunks == 2)
        #expect(try a.lookup(tokens: p3, model: "m").remoteChunks == 2)
    }

    @Test func unreachableAtOpenThenComesUp() throws {
        let port = try freePort()
        let tmp = TemporaryDirectory("remote-late")
        let dir = tmp.path
        let r = RemoteTierTests.remote(["redis://127.0.0.1:\(port)"])
        let a = try KVStore.create(at: dir + "/a", options: RemoteTierTests.options(), remote: r)
        var s = a.tierStats()!
        #expect(!s.connected && s.remoteErrors == 1)
        #expect(s.lastError == "\(RemoteError.connectionRefused(endpoint: "127.0.0.1:\(port)"))")
        let p = RemoteTierTests.prompt(4, chunks: 2)
        try a.store(tokens: p, model: "m", kv: try RemoteTierTests.cache(p))
        #expect(try a.lookup(tokens: p, model: "m").chunks == 2)
        let server = try RedisServer(port: port)
        Thread.sleep(forTimeInterval: 0.15)
        let q = RemoteTierTests.prompt(5, chunks: 2)
        try a.store(tokens: q, model: "m", kv: try RemoteTierTests.cache(q))
        #expect(a.flushRemote())
        s = a.tierStats()!
        #expect(s.connected && s.reconnects >= 1 && s.sentChunks == 2)
        #expect(
            try RedisClient(urls: [server.url]).exists(
                PrefixKey.chain(tokens: q, chunkTokens: 8, model: "m")
                    .map { Array("test:\(hex($0))".utf8) }) == [true, true])
    }

    @Test func damagedOrForeignValuesAreMisses() throws {
        let stored = try StoredPrompt("remote-damage", seed: 6, chunks: 4)
        let (server, a, p, kv, keys) = (stored.server, stored.a, stored.tokens, stored.kv, stored.redisKeys)
        // Flip bytes inside the third chunk's value in Redis.
        try server.cli(["setrange", keys[2], "200", "XXXX"])
        let b = try stored.node("b")
        let found = try b.lookup(tokens: p, model: "m")
        #expect(found.chunks == 2 && found.remoteChunks == 2 && found.kv == kv.slice(tokens: 0 ..< 16))
        #expect(b.tierStats()!.damagedRemote == 1)
        #expect(try b.stats().chunks == 2)  // the damaged chunk was not kept
        // A value of the wrong size, a sound chunk of another key (bound to its own), and a sound
        // chunk of another shape (16 tokens) bound to the right key: misses too.
        let client = try RedisClient(urls: [server.url])
        let chain = PrefixKey.chain(tokens: p, chunkTokens: 8, model: "m")
        let wide = try KVChunk.encode(
            try RemoteTierTests.cache(Array(p.prefix(16))), key: chain[0], codec: .lossless,
            kivi: KIVIOptions())
        let foreign = try #require(try a.rawChunk(chain[1]))
        for (i, value) in [Array("short".utf8), foreign, wide].enumerated() {
            try client.command(.init([Array("SET".utf8), Array(keys[0].utf8), value]))
            let c = try stored.node("c\(i)")
            #expect(try c.lookup(tokens: p, model: "m").chunks == 0)
            #expect(c.tierStats()!.damagedRemote == 1)
            #expect(try c.stats().chunks == 0)
        }
        // B holds chunks 0 and 1 locally, so it stops at the damaged third one again.
        #expect(try b.lookup(tokens: p, model: "m").chunks == 2)
        #expect(b.tierStats()!.damagedRemote == 2)
    }

    /// Per-layer K and V buffers `[tokens][heads][dim]` of bf16 for `tokens` tokens, zeroed, and their views.
    final class Buffers {
        let bytes: [UnsafeMutableRawBufferPointer]
        let views: [KVLayerView]
        let row: Int, stride: Int
        init(tokens: Int, layers: Int = 2, heads: Int = 2, dim: Int = 16) {
            row = dim * 2
            stride = heads * row
            let bytes = (0 ..< 2 * layers).map { _ in
                UnsafeMutableRawBufferPointer.allocate(byteCount: tokens * heads * dim * 2, alignment: 16)
            }
            for b in bytes { b.initializeMemory(as: UInt8.self, repeating: 0) }
            self.bytes = bytes
            views = (0 ..< layers).map { [stride] l in
                KVLayerView(
                    keys: bytes[2 * l].baseAddress!, values: bytes[2 * l + 1].baseAddress!, dtype: .bf16, kvHeads: heads,
                    headDim: dim, tokenStride: stride)
            }
        }
        deinit { bytes.forEach { $0.deallocate() } }

        /// Whether the first `tokens` tokens of every buffer hold `kv`'s (`[heads][tokens][dim]`) rows.
        func hold(_ kv: KVCacheData, tokens: Int) -> Bool {
            kv.layers.enumerated().allSatisfy { l, layer in
                [layer.keys, layer.values].enumerated().allSatisfy { i, t in
                    t.bytes.withUnsafeBytes { src in
                        (0 ..< t.heads).allSatisfy { h in
                            (0 ..< tokens).allSatisfy { tok in
                                memcmp(
                                    bytes[2 * l + i].baseAddress! + tok * stride + h * row,
                                    src.baseAddress! + (h * t.tokens + tok) * row, row) == 0
                            }
                        }
                    }
                }
            }
        }
    }

    @Test func lookupsIntoBuffersDecodeRemoteChunksInPlace() throws {
        let stored = try StoredPrompt("remote-into", seed: 8, chunks: 4)
        let (server, dir, p, kv) = (stored.server, stored.dir, stored.tokens, stored.kv)

        // B holds nothing: all four chunks are decoded from Redis straight into its buffers.
        let b = try stored.node("b")
        let bufB = Buffers(tokens: p.count)
        let got = try b.lookup(tokens: p, model: "m", into: bufB.views)
        #expect(got.tokens == 32 && got.chunks == 4 && got.damage == nil)
        #expect(bufB.hold(kv, tokens: 32))
        #expect(b.tierStats()!.remoteHitChunks == 4)
        #expect(try b.stats().chunks == 4)

        // C holds the first chunk locally; the other three come from Redis, after it, in place.
        do {
            let c = try KVStore.create(at: dir + "/c", options: RemoteTierTests.options())
            try c.store(tokens: Array(p.prefix(8)), model: "m", kv: kv.slice(tokens: 0 ..< 8))
        }
        let cr = try KVStore.open(at: dir + "/c", remote: stored.remote)
        let bufC = Buffers(tokens: p.count)
        #expect(try cr.lookup(tokens: p, model: "m", into: bufC.views).chunks == 4)
        #expect(bufC.hold(kv, tokens: 32))
        #expect(cr.tierStats()!.localHitChunks == 1 && cr.tierStats()!.remoteHitChunks == 3)

        // A damaged third chunk ends the prefix there: two chunks delivered, one miss counted.
        try server.cli(["setrange", stored.redisKeys[2], "200", "XXXX"])
        let d = try stored.node("d")
        let bufD = Buffers(tokens: p.count)
        let partial = try d.lookup(tokens: p, model: "m", into: bufD.views)
        #expect(partial.tokens == 16 && partial.chunks == 2)
        #expect(bufD.hold(kv, tokens: 16))
        #expect(d.tierStats()!.damagedRemote == 1)
        #expect(try d.stats().chunks == 2)

        // Buffers of another shape than the prompt's chunks: an invalid argument, nothing written.
        let e = try stored.node("e")
        let narrow = Buffers(tokens: p.count, heads: 1)
        #expect(throws: WStoreError.self) { try e.lookup(tokens: p, model: "m", into: narrow.views) }
        #expect(narrow.bytes.allSatisfy { $0.allSatisfy { $0 == 0 } })
        #expect(try e.stats().chunks == 0)
    }

    @Test func wrongPasswordIsOneClearErrorAndStoreStaysLocal() throws {
        let server = try RedisServer(password: "right")
        let tmp = TemporaryDirectory("remote-auth")
        let dir = tmp.path
        let a = try KVStore.create(
            at: dir + "/a", options: RemoteTierTests.options(),
            remote: RemoteTierTests.remote(["redis://:wrong@127.0.0.1:\(server.port)"]))
        let s = a.tierStats()!
        #expect(!s.connected && s.remoteErrors == 1)
        #expect(s.lastError?.contains("refused authentication") == true && s.lastError?.contains("\n") == false)
        let p = RemoteTierTests.prompt(7, chunks: 2)
        try a.store(tokens: p, model: "m", kv: try RemoteTierTests.cache(p))
        #expect(try a.lookup(tokens: p, model: "m").chunks == 2)
        // The right password works.
        let b = try KVStore.create(
            at: dir + "/b", options: RemoteTierTests.options(),
            remote: RemoteTierTests.remote([server.url]))
        try b.store(tokens: p, model: "m", kv: try RemoteTierTests.cache(p))
        #expect(b.flushRemote() && b.tierStats()!.sentChunks == 2)
    }

    @Test func fullQueueDropsAndCounts() throws {
        let server = try RedisServer()
        let tmp = TemporaryDirectory("remote-queue")
        let dir = tmp.path
        var r = RemoteTierTests.remote([server.url])
        r.queueChunks = 2
        let a = try KVStore.create(at: dir + "/a", options: RemoteTierTests.options(), remote: r)
        let p = RemoteTierTests.prompt(8, chunks: 10)
        try a.store(tokens: p, model: "m", kv: try RemoteTierTests.cache(p))
        #expect(a.flushRemote())
        let s = a.tierStats()!
        #expect(s.queueDrops == 8 && s.sentChunks == 2 && s.queued == 0)
    }

    @Test func inspectionCountsWhatTheRemoteTierHolds() throws {
        let server = try RedisServer(arguments: ["--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"])
        let tmp = TemporaryDirectory("remote-inspect")
        let r = RemoteTierTests.remote([server.url])
        let a = try KVStore.create(at: tmp.sub("a"), options: RemoteTierTests.options(), remote: r)
        let p = RemoteTierTests.prompt(9, chunks: 4)
        try a.store(tokens: p, model: "m", kv: try RemoteTierTests.cache(p))
        #expect(a.flushRemote())
        // One chunk leaves Redis (as its LRU eviction would take it).
        try server.cli(["del", "test:" + hex(PrefixKey.chain(tokens: p, chunkTokens: 8, model: "m")[3])])
        let inspected = try #require(try KVStore.open(at: tmp.sub("a"), readOnly: true, remote: r).inspectRemote())
        #expect(inspected.localChunks == 4 && inspected.alsoRemote == 3)
        #expect(
            inspected.maxMemory == 64 << 20 && inspected.evictionPolicy == "allkeys-lru" && inspected.usedMemory! > 0)
        #expect(inspected.stats.connected && inspected.stats.remoteErrors == 0)
        #expect(try KVStore.open(at: tmp.sub("a"), readOnly: true).inspectRemote() == nil)
    }
}

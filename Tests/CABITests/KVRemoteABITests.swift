import CWStoreABI
import CWStoreHeader
import Foundation
import Testing
import WStoreTestSupport

/// The KV cache's remote tier through the C ABI: two handles on two local directories share
/// one real Redis server, as two engine nodes would.
@Suite(.enabled(if: RedisServer.available, "redis-server not found after `make deps`"))
struct KVRemoteABITests {
    static let layers = 2, heads = 2, dim = 8, tokens = 48, chunk: Int64 = 16

    /// f32 K and V of every layer, `[tokens][heads][dim]`: values that name their position,
    /// or `fill` everywhere. The caller deallocates them.
    static func buffers(fill: Float? = nil) -> [UnsafeMutableBufferPointer<Float>] {
        (0 ..< 2 * layers).map { i in
            let b = UnsafeMutableBufferPointer<Float>.allocate(capacity: tokens * heads * dim)
            for j in b.indices { b[j] = fill ?? Float(j % 251) * 0.5 + Float(i) }
            return b
        }
    }

    static func describe(_ bufs: [UnsafeMutableBufferPointer<Float>]) -> [wstore_kv_layer] {
        (0 ..< layers).map { l in
            var layer = wstore_kv_layer()
            layer.k = UnsafeMutableRawPointer(bufs[2 * l].baseAddress)
            layer.v = UnsafeMutableRawPointer(bufs[2 * l + 1].baseAddress)
            layer.dtype = Int32(WSTORE_DTYPE_F32.rawValue)
            layer.kv_heads = Int32(heads)
            layer.head_dim = Int32(dim)
            layer.token_stride = Int64(heads * dim * 4)
            return layer
        }
    }

    @Test func aPromptStoredByOneNodeIsFoundByAnother() throws {
        let server = try RedisServer()
        let dir = TemporaryDirectory("kv-remote-abi")
        var options = wstore_kv_options()
        options.chunk_tokens = Self.chunk
        let tokens = (0 ..< UInt32(Self.tokens)).map { $0 * 7 + 3 }

        func open(_ name: String) throws -> OpaquePointer {
            var handle: OpaquePointer?
            let rc = server.url.withCString { url in
                "abi:".withCString { ns in
                    var remote = wstore_kv_remote(urls: url, key_namespace: ns, timeout_ms: 2000, queue_chunks: 0)
                    return wstore_kv_create_remote(dir.sub(name), &options, &remote, &handle)
                }
            }
            #expect(rc == 0, "\(String(cString: wstore_last_error()))")
            return try #require(handle)
        }
        let a = try open("a"), b = try open("b")
        defer {
            _ = wstore_kv_close(a)
            _ = wstore_kv_close(b)
        }

        // Node A stores the prompt; its chunks reach Redis in the background.
        let source = Self.buffers()
        defer { source.forEach { $0.deallocate() } }
        var layersA = Self.describe(source)
        var cached = 0
        #expect(wstore_kv_store(a, "m", nil, tokens, tokens.count, &layersA, layersA.count, &cached) == 0)
        #expect(cached == Self.tokens)
        var drained: Int32 = 0
        #expect(wstore_kv_flush_remote(a, 10_000, &drained) == 0 && drained == 1)

        // Node B has nothing locally and finds the whole prefix in the remote tier, bit-exact.
        var probe = 0
        #expect(wstore_kv_probe(b, "m", nil, tokens, tokens.count, &probe) == 0 && probe == 0)
        let out = Self.buffers(fill: -1)
        defer { out.forEach { $0.deallocate() } }
        var layersB = Self.describe(out)
        var result = wstore_kv_lookup_result()
        #expect(wstore_kv_lookup(b, "m", nil, tokens, tokens.count, &layersB, layersB.count, &result) == 0)
        #expect(result.tokens == UInt64(Self.tokens) && result.damaged == 0)
        #expect(zip(out, source).allSatisfy { Array($0) == Array($1) })
        var stats = wstore_kv_tier_stats()
        #expect(wstore_kv_get_tier_stats(b, &stats) == 0)
        #expect(stats.has_remote == 1 && stats.remote_hit_chunks == 3 && stats.local_hit_chunks == 0)
        #expect(stats.bytes_fetched > 0 && stats.damaged_remote == 0)
        // ... and kept them locally: the next probe finds them without Redis.
        #expect(wstore_kv_probe(b, "m", nil, tokens, tokens.count, &probe) == 0 && probe == Self.tokens)
        #expect(wstore_kv_get_tier_stats(a, &stats) == 0 && stats.sent_chunks == 3)
    }

    @Test func badRemoteSettingsAreInvalidArgumentsAndNoRemoteIsNoTier() throws {
        let dir = TemporaryDirectory("kv-remote-abi-bad")
        var handle: OpaquePointer?
        for bad in ["http://127.0.0.1:6379", "", "redis://host:notaport"] {
            let rc = bad.withCString { url in
                var remote = wstore_kv_remote(urls: url, key_namespace: nil, timeout_ms: 0, queue_chunks: 0)
                return wstore_kv_create_remote(dir.sub("bad"), nil, &remote, &handle)
            }
            #expect(rc == WSTORE_E_INVALID_ARGUMENT.rawValue, "\(bad)")
        }
        #expect(wstore_kv_create_remote(dir.sub("plain"), nil, nil, &handle) == 0)
        let plain = try #require(handle)
        defer { _ = wstore_kv_close(plain) }
        var stats = wstore_kv_tier_stats()
        stats.has_remote = 7
        #expect(wstore_kv_get_tier_stats(plain, &stats) == 0 && stats.has_remote == 0)
    }
}

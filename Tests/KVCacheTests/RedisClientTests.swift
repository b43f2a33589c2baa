import Foundation
import Testing
import WStoreCore
import WStoreRemote
import WStoreTestSupport

/// The hiredis client against real servers the tests start.
@Suite(.enabled(if: RedisServer.available, "redis-server not found after `make deps`"))
struct RedisClientTests {
    @Test func hashSlotsMatchRedis() throws {
        // Reference values from `CLUSTER KEYSLOT` on a real cluster node.
        let server = try RedisServer(cluster: true)
        for key in [
            "foo", "bar", "{user1000}.following", "user1000", "a{}b", "{}x", "wstore:kv:00ff00ff00ff00ff", "x{y}{z}",
        ] {
            let slot = Int(try server.cli(["cluster", "keyslot", key]).trimmingCharacters(in: .whitespacesAndNewlines))
            #expect(HashSlot.of(Array(key.utf8)) == slot, "\(key)")
        }
        #expect(HashSlot.of(Array("{user1000}.following".utf8)) == HashSlot.of(Array("{user1000}.followers".utf8)))
    }

    @Test func standaloneBinarySafePipeline() throws {
        let server = try RedisServer()
        let client = try RedisClient(urls: [server.url])
        #expect(!client.isCluster)
        let values: [[UInt8]] = [[], [0, 13, 10, 0, 255], Array(repeating: 7, count: 3 << 20)]
        let keys = (0 ..< values.count).map { Array("k\($0)\0\r\n".utf8) }
        #expect(try client.setIfAbsent(Array(zip(keys, values))) == [true, true, true])
        #expect(try client.setIfAbsent([(keys[0], [1])]) == [false])
        #expect(try client.get(keys + [Array("absent".utf8)]) == values + [nil])
        #expect(try client.exists(keys + [Array("absent".utf8)]) == [true, true, true, false])
    }

    @Test(arguments: [0, 1, 1 << 20, 8 << 20]) func windowedPipelinesKeepOrderAndEveryReply(window: Int) throws {
        let server = try RedisServer()
        var options = RedisClient.Options()
        options.pipelineWindowBytes = window
        let client = try RedisClient(urls: [server.url], options: options)
        // Values from 0 bytes to 1.5 MiB, mixed, so the window grows and shrinks as replies arrive.
        var rng = SplitMix64(seed: UInt64(window) + 3)
        let sizes = (0 ..< 40).map { i in i % 5 == 0 ? Int(rng.next() % (3 << 19)) : Int(rng.next() % 64) }
        let values = sizes.enumerated().map { i, n in (0 ..< n).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ i) } }
        let keys = (0 ..< values.count).map { Array("w\($0)".utf8) }
        #expect(try client.setIfAbsent(Array(zip(keys, values))).allSatisfy { $0 })
        var seen: [Int] = []
        let got = try client.get(keys + [Array("absent".utf8)]) { i, _ in seen.append(i) }
        #expect(got == values + [nil])
        #expect(seen == Array(0 ... values.count))
    }

    @Test func streamedGetsHandOverEveryValueAndServerErrors() throws {
        let server = try RedisServer()
        var options = RedisClient.Options()
        options.pipelineWindowBytes = 1 << 20
        let client = try RedisClient(urls: [server.url], options: options)
        let values: [[UInt8]] = (0 ..< 12).map { i in (0 ..< (i % 3 == 0 ? 1_500_000 : 9)).map { UInt8(truncatingIfNeeded: $0 ^ i) } }
        let keys = (0 ..< values.count).map { Array("s\($0)".utf8) }
        #expect(try client.setIfAbsent(Array(zip(keys, values))).allSatisfy { $0 })
        var got: [Int: [UInt8]?] = [:]
        try client.streamGet(keys + [Array("absent".utf8)]) { i, v in got[i] = v }
        #expect(got.count == values.count + 1)
        #expect((0 ..< values.count).allSatisfy { got[$0]! == values[$0] } && got[values.count]! == nil)
        // Replies of every RESP type come through the reply builder: status, integer, nested arrays, errors.
        _ = try client.command(.init(["RPUSH", "list", "a", "bb", ""].map { Array($0.utf8) }))
        #expect(try client.command(.init("LRANGE", "list", "0", "-1")) == .array([.string(Array("a".utf8)), .string(Array("bb".utf8)), .string([])]))
        #expect(try client.command(.init("SET", "plain", "v")) == .status("OK"))
        #expect(try client.command(.init("EXISTS", "plain")) == .integer(1))
        #expect(
            try client.pipeline([.init("EVAL", "return {1, {'x', {2}}, false}", "0")])[0]
                == .array([.integer(1), .array([.string(Array("x".utf8)), .array([.integer(2)])]), .null]))
        // A GET of a list is a WRONGTYPE error reply: streamGet throws it after reading the pipeline.
        var delivered = 0
        #expect(throws: RemoteError.self) {
            try client.streamGet([keys[1], Array("list".utf8), keys[2]]) { _, _ in delivered += 1 }
        }
        #expect(delivered == 2)
        // The connection is still usable afterwards.
        #expect(try client.get([keys[1]]) == [values[1]])
    }

    @Test func clusterRoutesEveryKey() throws {
        let cluster = try RedisCluster()
        let client = try RedisClient(urls: cluster.urls)
        #expect(client.isCluster)
        let keys = (0 ..< 300).map { Array("key-\($0)".utf8) }
        let values = keys.map { $0 + [0, 1, 2] }
        #expect(try client.setIfAbsent(Array(zip(keys, values))).allSatisfy { $0 })
        #expect(try client.get(keys) == values)
        #expect(client.redirects == 0)
        // Each node holds only its own slots: the keys were spread, not all sent to one node.
        let sizes = try cluster.nodes.map {
            Int(try $0.cli(["dbsize"]).trimmingCharacters(in: .whitespacesAndNewlines))!
        }
        #expect(sizes.reduce(0, +) == keys.count && sizes.allSatisfy { $0 > 0 })
        // A single seed URL finds the whole cluster too.
        let one = try RedisClient(urls: [cluster.urls[1]])
        #expect(one.isCluster)
        #expect(try one.get(keys) == values)
    }

    @Test func errorsAreOneClearLine() throws {
        let server = try RedisServer(password: "s3cret")
        let wrong = "redis://:nope@127.0.0.1:\(server.port)"
        #expect { _ = try RedisClient(urls: [wrong]) } throws: { e in
            guard case .authFailed = e as? RemoteError else { return false }
            return !"\(e)".contains("\n") && "\(e)".contains("password")
        }
        #expect { _ = try RedisClient(urls: ["redis://127.0.0.1:\(server.port)"]) } throws: { e in
            guard case .authFailed = e as? RemoteError else { return false }
            return true
        }
        #expect(try RedisClient(urls: [server.url]).exists([[1]]) == [false])
        let closed = try freePort()
        #expect(throws: RemoteError.connectionRefused(endpoint: "127.0.0.1:\(closed)")) {
            _ = try RedisClient(urls: ["redis://127.0.0.1:\(closed)"])
        }
        #expect(throws: RemoteError.self) { _ = try RedisClient(urls: ["http://127.0.0.1:1"]) }
        #expect(throws: RemoteError.self) { _ = try RedisClient(urls: ["redis://127.0.0.1:notaport"]) }
    }

    @Test func nonRedisPortIsNamed() throws {
        let port = try startNotRedisServer(connections: 1)
        #expect { _ = try RedisClient(urls: ["redis://127.0.0.1:\(port)"]) } throws: { e in
            guard case .notRedis = e as? RemoteError else { return false }
            return "\(e)".contains("not a Redis server")
        }
    }
}

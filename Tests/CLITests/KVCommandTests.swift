import Foundation
import Testing
import WStoreReplay
import WStoreTestSupport

@testable import KVCache
@testable import WStoreCLI

/// `wstore kv compress`, `kv inspect` and `bench kv`, run in-process on files written by numpy/safetensors.
@Suite struct KVCommandTests {
    /// A KV file written by the real safetensors package.
    static func writeKVFile(_ path: String, tokens: Int = 300) throws {
        _ = try runPython([
            "-c",
            """
            import numpy as np
            from safetensors.numpy import save_file
            rng = np.random.default_rng(1)
            t = {}
            for l in range(2):
                t[f"layers.{l}.keys"] = rng.normal(size=(2, \(tokens), 32)).astype(np.float16)
                t[f"layers.{l}.values"] = rng.normal(size=(2, \(tokens), 32)).astype(np.float16)
                t[f"layers.{l}.queries"] = rng.normal(size=(4, 8, 32)).astype(np.float16)
            save_file(t, "\(path)")
            """,
        ])
    }

    @Test func compressWithSnapKVAndInt4() throws {
        let tmp = TemporaryDirectory("kvcli")
        let dir = tmp.path
        try KVCommandTests.writeKVFile(dir + "/kv.safetensors")
        var cmd = try #require(
            try WStoreCommand.parseAsRoot([
                "kv", "compress", "--input", dir + "/kv.safetensors", "--output", dir + "/out.safetensors",
                "--snapkv", "window=8,capacity=64,kernel=5,pool=avg,heads=query", "--codec", "int4",
            ]) as? KVCompress)
        try cmd.run()
        let out = try KVSafetensors.read(path: dir + "/out.safetensors")
        let input = try KVSafetensors.read(path: dir + "/kv.safetensors")
        for l in 0 ..< 2 {
            let kept = try KVSafetensors.positions(out["layers.\(l).kept"]!, name: "kept")
            #expect(kept.count == 4 && kept.allSatisfy { $0.count == 64 && $0 == $0.sorted() })
            // The selection is SnapKV's, on the input.
            var c = SnapKV.Config()
            (c.window, c.capacity, c.kernel, c.pooling) = (8, 64, 5, .avg)
            let expected = try SnapKV.select(
                queries: input["layers.\(l).queries"]!.kvTensor(name: "q"),
                keys: input["layers.\(l).keys"]!.kvTensor(name: "k"), config: c)
            #expect(kept == expected)
            let keys = try out["layers.\(l).keys"]!.kvTensor(name: "keys")
            #expect(keys.shape == [4, 64, 32] && keys.dtype == .f16)
            // int4 reconstruction of the gathered keys stays close.
            let gathered = try input["layers.\(l).keys"]!.kvTensor(name: "k").gather(positions: kept)
            let e = KVError.measure(gathered, keys)
            #expect(e.relativeRMS > 0 && e.relativeRMS < 0.15)
        }
    }

    @Test func compressRejectsBadInputAndLeavesOutputAlone() throws {
        let tmp = TemporaryDirectory("kvcli-bad")
        let dir = tmp.path
        try KVCommandTests.writeKVFile(dir + "/kv.safetensors")
        try Data("keep me".utf8).write(to: URL(fileURLWithPath: dir + "/out.safetensors"))
        let whole = try Data(contentsOf: URL(fileURLWithPath: dir + "/kv.safetensors"))
        try whole.prefix(whole.count - 100).write(to: URL(fileURLWithPath: dir + "/trunc.safetensors"))
        var cmd = try #require(
            try WStoreCommand.parseAsRoot([
                "kv", "compress", "--input", dir + "/trunc.safetensors", "--output", dir + "/out.safetensors",
            ]) as? KVCompress)
        // The one safetensors reader refuses it, naming the file.
        let error = #expect(throws: ImportError.self) { try cmd.run() }
        #expect(error?.file == dir + "/trunc.safetensors")
        #expect(try String(contentsOfFile: dir + "/out.safetensors", encoding: .utf8) == "keep me")
        #expect(
            usageError(["kv", "compress", "--input", "a", "--output", "b", "--snapkv", "kernel=4"])
                == "SnapKV pooling kernel must be odd and positive, got 4")
    }

    @Test func benchKVThroughAStoreAgreesWithTheReplay() throws {
        let tmp = TemporaryDirectory("kvbench")
        let dir = tmp.path
        var cmd = try #require(
            try WStoreCommand.parseAsRoot([
                "bench", "kv", "--generate", "60", "--block-tokens", "16", "--capacity-blocks", "20", "--requests",
                "60",
                "--model-shape", "layers=2,kv_heads=2,head_dim=16,dtype=f16", "--codec", "int8", "--store", dir + "/kv",
            ]) as? BenchKV)
        let reqs = BenchKV.generatedTrace(requests: 60, seed: 1, blockTokens: 16)
        let report = try cmd.replayThroughStore(
            reqs, shape: try cmd.parseShape("layers=2,kv_heads=2,head_dim=16,dtype=f16"),
            capacity: 20)
        #expect(report.hitBlocks == report.replayHitBlocks && report.hitBlocks > 0)
        #expect(report.putBytes > 0 && report.getBytes > 0)
        // The CPU the puts and the encode peer took, for the cores each kept busy.
        #expect(report.putCPUSeconds > 0 && report.encodeCPUSeconds > 0 && report.encodeSeconds > 0)
        #expect(report.relativeRMSError > 0 && report.relativeRMSError < 0.01)  // int8
        let stats = try KVStore.open(at: dir + "/kv", readOnly: true).stats()
        #expect(stats.chunks <= 20 && stats.chunks > 0)
        try FileManager.default.removeItem(atPath: dir + "/kv")
        try cmd.run()  // the whole command, output included
        var inspect = try #require(
            try WStoreCommand.parseAsRoot(["kv", "inspect", dir + "/kv", "--json"]) as? KVInspect)
        try inspect.run()
    }
}

/// `wstore bench kv --nodes N --remote URL` against a real Redis server the test starts.
@Suite(.enabled(if: RedisServer.available, "redis-server not found after `make deps`"))
struct BenchKVNodesTests {
    @Test func sharedRedisTierMatchesReferenceAndRealStores() throws {
        let server = try RedisServer()
        let tmp = TemporaryDirectory("bench-nodes")
        let reqs = BenchKV.generatedTrace(requests: 400, seed: 9, blockTokens: 512)
        let lines = reqs.map {
            "{\"timestamp\": \($0.timestamp), \"input_length\": \($0.inputLength), \"output_length\": 1, \"hash_ids\": \($0.hashIDs)}"
        }
        try (lines.joined(separator: "\n") + "\n").write(toFile: tmp.sub("t.jsonl"), atomically: true, encoding: .utf8)
        let cmd = try #require(
            try WStoreCommand.parseAsRoot([
                "bench", "kv", "--trace", tmp.sub("t.jsonl"), "--nodes", "3", "--capacity-blocks", "30", "--remote",
                server.url,
                "--model-shape", "layers=2,kv_heads=2,head_dim=8", "--requests", "40", "--block-tokens", "512",
                "--json",
            ]) as? BenchKV)
        let report = try cmd.nodesReport(try MooncakeTrace.read(path: tmp.sub("t.jsonl")), label: "t", nodes: 3)
        let row = try #require(report.rows.first)
        // The plain Python replay of the same rule, local tiers alone and with an unbounded shared tier.
        let out = try runPython([
            repositoryRoot + "/Tests/KVCacheTests/Fixtures/shared_tier_reference.py", tmp.sub("t.jsonl"),
            "512", "3", "30",
        ])
        let refs = try out.split(separator: "\n").map {
            try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any]
        }
        let refLocal = try #require(refs.first { $0["remote"] as? Bool == false })
        let refShared = try #require(refs.first { $0["remote"] as? Bool == true })
        #expect(row.localOnly.localHitBlocks == refLocal["local_hit_blocks"] as! Int)
        #expect(row.shared.localHitBlocks == refShared["local_hit_blocks"] as! Int)
        #expect(row.shared.remoteHitBlocks == refShared["remote_hit_blocks"] as! Int)
        #expect(row.shared.hitBlocks == report.singleNodeUnbounded.hitBlocks && row.shared.remoteHitBlocks > 0)
        #expect(row.bytesSent > 0 && row.bytesFetched > 0 && row.remoteLookup.count > 0)
        // Through real KV stores and the real remote tier: the same total as one unbounded node.
        let s = try #require(report.store)
        #expect(s.localHitChunks + s.remoteHitChunks == s.singleNodeUnboundedHitBlocks && s.remoteHitChunks > 0)
        #expect(s.remoteErrors == 0 && s.damagedRemote == 0 && s.queueDrops == 0 && s.bytesFetched > 0)
        // The run leaves nothing behind in Redis.
        #expect(try server.cli(["dbsize"]).trimmingCharacters(in: .whitespacesAndNewlines) == "0")
    }
}

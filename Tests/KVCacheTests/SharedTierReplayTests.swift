import Foundation
import Testing
import WStoreCore
import WStoreReplay
import WStoreTestSupport

/// `SharedTierReplay` (what `wstore bench kv --nodes` reports) against the plain Python reference.
@Suite struct SharedTierReplayTests {
    @Test(
        .enabled(
            if: PrefixReplayTests.mooncakeTrace != nil,
            "skipped: ../shared/data/mooncake/conversation_trace.jsonl is absent"))
    func fourNodesOnMooncakeTraceReachOneUnboundedNode() throws {
        let path = try #require(PrefixReplayTests.mooncakeTrace)
        let shared = try compare(path: path, nodes: 4, capacity: 5000)
        // An unbounded shared tier gives every node what one unbounded node would find.
        let single = PrefixReplay.run(
            try MooncakeTrace.read(path: path), capacityBlocks: 0, blockTokens: 512, policy: .lru)
        #expect(shared.hitBlocks == single.hitBlocks && shared.blockHitRate == single.blockHitRate)
        #expect(shared.remoteHitBlocks > 0 && shared.localHitBlocks > 0)
    }

    @Test func equalsReferenceOnGeneratedTrace() throws {
        let tmp = TemporaryDirectory("sharedtier")
        try PrefixReplayTests.generatedTrace(requests: 1500, seed: 3).write(
            toFile: tmp.sub("g.jsonl"), atomically: true, encoding: .utf8)
        for (nodes, cap) in [(3, 40), (2, 0), (5, 3), (1, 100)] {
            let shared = try compare(path: tmp.sub("g.jsonl"), nodes: nodes, capacity: cap)
            let single = PrefixReplay.run(
                try MooncakeTrace.read(path: tmp.sub("g.jsonl")), capacityBlocks: 0, blockTokens: 512, policy: .lru)
            #expect(shared.hitBlocks == single.hitBlocks)
        }
    }

    /// Checks both replays (local tiers only, and with an unbounded shared tier) against the
    /// reference; returns the shared one.
    @discardableResult
    func compare(path: String, nodes: Int, capacity: Int) throws -> SharedTierReplay.Result {
        let script = repositoryRoot + "/Tests/KVCacheTests/Fixtures/shared_tier_reference.py"
        let out = try runPython([script, path, "512", String(nodes), String(capacity)])
        let requests = try MooncakeTrace.read(path: path)
        var none: UnboundedBlockTier? = nil
        var tier: UnboundedBlockTier? = UnboundedBlockTier()
        let localOnly = try SharedTierReplay.run(
            requests, nodes: nodes, capacityBlocks: capacity, blockTokens: 512, tier: &none)
        let shared = try SharedTierReplay.run(
            requests, nodes: nodes, capacityBlocks: capacity, blockTokens: 512, tier: &tier)
        var compared = 0
        for line in out.split(separator: "\n") {
            let ref = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
            let mine = ref["remote"] as! Bool ? shared : localOnly
            let what = "\(nodes) nodes, \(capacity) blocks, remote \(ref["remote"]!)"
            #expect(mine.blocks == ref["blocks"] as! Int, "\(what)")
            #expect(mine.localHitBlocks == ref["local_hit_blocks"] as! Int, "\(what)")
            #expect(mine.remoteHitBlocks == ref["remote_hit_blocks"] as! Int, "\(what)")
            #expect(mine.tokens == ref["tokens"] as! Int, "\(what)")
            #expect(mine.hitTokens == ref["hit_tokens"] as! Int, "\(what)")
            compared += 1
        }
        #expect(compared == 2)
        return shared
    }
}

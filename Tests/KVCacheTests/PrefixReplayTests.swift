import Foundation
import Testing
import WStoreCore
import WStoreReplay
import WStoreTestSupport

@testable import KVCache

/// `PrefixReplay` (what `wstore bench kv` reports) against the plain Python reference replay.
@Suite struct PrefixReplayTests {
    /// The Mooncake conversation trace in ../shared, when it is there.
    static let mooncakeTrace = sharedData("mooncake/conversation_trace.jsonl")

    /// Requests that share system prompts and conversation prefixes, in Mooncake's format.
    static func generatedTrace(requests: Int, seed: UInt64) -> String {
        var rng = SplitMix64(seed: seed)
        var next = 0
        var conversations: [[Int]] = []
        var lines: [String] = []
        for i in 0 ..< requests {
            var ids: [Int]
            if !conversations.isEmpty && rng.uniform() < 0.6 {
                let c = Int(rng.next() % UInt64(conversations.count))
                ids = conversations[c]
                for _ in 0 ..< 1 + Int(rng.next() % 3) {
                    ids.append(next)
                    next += 1
                }
                conversations[c] = ids
            } else {
                ids = [Int(rng.next() % 4)]  // one of a few system prompts
                for _ in 0 ..< 1 + Int(rng.next() % 8) {
                    ids.append(1000 + next)
                    next += 1
                }
                conversations.append(ids)
            }
            let length = (ids.count - 1) * 512 + 1 + Int(rng.next() % 512)
            lines.append(
                "{\"timestamp\": \(i), \"input_length\": \(length), \"output_length\": 10, \"hash_ids\": \(ids)}")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    @Test(
        .enabled(
            if: PrefixReplayTests.mooncakeTrace != nil,
            "skipped: ../shared/data/mooncake/conversation_trace.jsonl is absent"))
    func equalsReferenceReplayOnMooncakeTrace() throws {
        let path = try #require(Self.mooncakeTrace)
        try compare(path: path, label: "Mooncake conversation trace", capacities: [0, 20000, 1000])
    }

    @Test func equalsReferenceReplayOnGeneratedTrace() throws {
        let tmp = TemporaryDirectory("gentrace")
        let dir = tmp.path
        try PrefixReplayTests.generatedTrace(requests: 2000, seed: 11).write(
            toFile: dir + "/g.jsonl", atomically: true, encoding: .utf8)
        try compare(path: dir + "/g.jsonl", label: "generated", capacities: [0, 300, 40, 3])
    }

    func compare(path: String, label: String, capacities: [Int]) throws {
        let script = repositoryRoot + "/Tests/KVCacheTests/Fixtures/prefix_replay_reference.py"
        let out = try runPython([script, path, "512"] + capacities.map(String.init))
        let requests = try MooncakeTrace.read(path: path)
        var compared = 0
        for line in out.split(separator: "\n") {
            let ref = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
            let policy = PrefixReplay.Policy(rawValue: ref["policy"] as! String)!
            let cap = ref["capacity"] as! Int
            let mine = PrefixReplay.run(requests, capacityBlocks: cap, blockTokens: 512, policy: policy)
            #expect(mine.blocks == ref["blocks"] as! Int, "\(label) \(policy) \(cap)")
            #expect(mine.hitBlocks == ref["hit_blocks"] as! Int, "\(label) \(policy) \(cap)")
            #expect(mine.tokens == ref["tokens"] as! Int, "\(label) \(policy) \(cap)")
            #expect(mine.hitTokens == ref["hit_tokens"] as! Int, "\(label) \(policy) \(cap)")
            #expect(mine.evictions == ref["evictions"] as! Int, "\(label) \(policy) \(cap)")
            compared += 1
        }
        #expect(compared == 2 * capacities.count)
    }

    @Test func malformedTraceNamesTheLine() throws {
        let tmp = TemporaryDirectory("badtrace")
        let dir = tmp.path
        try
            "{\"timestamp\": 0, \"input_length\": 5, \"hash_ids\": [1]}\n{\"timestamp\": 1, \"input_length\": \"x\", \"hash_ids\": [1]}\n"
            .write(toFile: dir + "/t.jsonl", atomically: true, encoding: .utf8)
        #expect(
            throws: WStoreError.invalidArgument(dir + "/t.jsonl:2: input_length missing or not a non-negative integer")
        ) {
            _ = try MooncakeTrace.read(path: dir + "/t.jsonl")
        }
    }
}

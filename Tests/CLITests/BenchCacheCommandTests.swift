import Foundation
import Testing
import WStoreCore
import WStoreReplay
import WStoreTestSupport
import WeightStore

@testable import WStoreCLI

/// Writes a synthetic routing trace with `wstore trace synth` (its --json summary printed).
private func synthesizeTrace(_ path: String, layers: Int, experts: Int, requests: Int, tokens: Int) throws {
    var synth = try #require(
        try WStoreCommand.parseAsRoot(
            [
                "trace", "synth", path, "--layers", String(layers), "--experts", String(experts), "--requests",
                String(requests), "--tokens", String(tokens), "--json",
            ]) as? TraceSynthCommand)
    try synth.run()
}

@Suite("wstore trace synth and bench cache")
struct BenchCacheCommandTests {
    @Test func benchReportsEveryPolicyBesideMIN() throws {
        let dir = TemporaryDirectory()
        let trace = dir.path + "/t.jsonl"
        try synthesizeTrace(trace, layers: 4, experts: 8, requests: 2, tokens: 50)
        let bench = try #require(
            try WStoreCommand.parseAsRoot(
                ["bench", "cache", "--trace", trace, "--capacity", "50%", "--prefetch", "--json"]) as? BenchCache)
        let report = try bench.makeReport()
        #expect(report.capacity == 16 && report.accesses == 4 * 100 * 2)
        #expect(report.policies.map(\.policy) == ResidencyPolicyKind.allCases.map(\.rawValue))
        #expect(report.policies.allSatisfy { $0.per_layer.count == 4 && $0.prefetch_loads > 0 })
        let json = try JSONSerialization.jsonObject(with: JSONOutput.encoder.encode(report)) as? [String: Any]
        for key in ["trace", "capacity", "min_hit_rate", "policies"] { #expect(json?[key] != nil, "\(key)") }
        let first = (json?["policies"] as? [[String: Any]])?.first
        for key in ["policy", "hit_rate", "loads_per_access", "per_layer"] { #expect(first?[key] != nil, "\(key)") }
    }

    @Test func benchWithAStoreReallyLoads() throws {
        let dir = TemporaryDirectory()
        _ = try makeExpertStore(at: dir.path + "/s", layers: 2, experts: 4)
        let trace = dir.path + "/t.jsonl"
        try synthesizeTrace(trace, layers: 2, experts: 4, requests: 1, tokens: 40)
        let bench = try #require(
            try WStoreCommand.parseAsRoot(
                ["bench", "cache", "--trace", trace, "--capacity", "4", "--store", dir.path + "/s", "--policy", "lru"])
                as? BenchCache)
        let report = try bench.makeReport()
        let simulated = try #require(
            try WStoreCommand.parseAsRoot(
                ["bench", "cache", "--trace", trace, "--capacity", "4", "--policy", "lru"]) as? BenchCache
        ).makeReport()
        // One thread, no prefetch: the real manager makes the simulator's decisions.
        #expect(report.policies[0].hit_rate == simulated.policies[0].hit_rate)
        #expect(report.policies[0].demand_loads == simulated.policies[0].demand_loads)
        #expect(report.policies[0].stall_p50_us != nil)
    }

    /// A trace whose router runners-up foretell the next token's picks: the store replay
    /// reports them to the manager as the simulator reports them to the policy.
    @Test func routerScoresReachTheManagerAsTheyReachTheSimulatedPolicy() throws {
        let dir = TemporaryDirectory()
        _ = try makeExpertStore(at: dir.path + "/s", layers: 2, experts: 8, topK: 1)
        var t = RoutingTrace(header: .init(layers: 2, experts: 8, topK: 1))
        var rng = SplitMix64(seed: 11)
        let picks = (0 ... 300).map { _ in (0 ..< 2).map { _ in Int.random(in: 0 ..< 8, using: &rng) } }
        for tok in 0 ..< 300 {
            let scores = (0 ..< 2).map { l -> [(expert: Int, probability: Double)]? in
                let pick = picks[tok][l]
                let next = picks[tok + 1][l] == pick ? (pick + 1) % 8 : picks[tok + 1][l]
                return [(pick, 0.6), (next, 0.3)]
            }
            try t.append(request: 0, experts: picks[tok].map { [$0] }, predicted: nil, scores: scores)
        }
        let trace = dir.path + "/t.jsonl"
        try t.jsonLines().write(to: URL(fileURLWithPath: trace))
        func report(_ extra: [String]) throws -> Report {
            try #require(
                try WStoreCommand.parseAsRoot(
                    ["bench", "cache", "--trace", trace, "--capacity", "4", "--policy", "forecast"] + extra)
                    as? BenchCache
            ).makeReport()
        }
        let stored = try report(["--store", dir.path + "/s"]).policies[0]
        let simulated = try report([]).policies[0]
        let unscored = try report(["--no-router-scores"]).policies[0]
        #expect(stored.hit_rate == simulated.hit_rate && stored.demand_loads == simulated.demand_loads)
        #expect(
            simulated.hit_rate > unscored.hit_rate, "with scores \(simulated.hit_rate), without \(unscored.hit_rate)")
    }

    @Test func badInputsAreClearErrors() throws {
        let dir = TemporaryDirectory()
        let trace = dir.path + "/bad.jsonl"
        try Data(
            (#"{"kind":"wstore.routing-trace","version":1,"layers":1,"experts":2,"top_k":1}"#
                + "\n{\"experts\":[[5]]}\n").utf8
        )
        .write(to: URL(fileURLWithPath: trace))
        let bench = try #require(
            try WStoreCommand.parseAsRoot(["bench", "cache", "--trace", trace, "--capacity", "1"]) as? BenchCache)
        #expect(throws: RoutingTraceError.malformed(line: 2, "\"experts\"[0] names expert 5, outside 0..<2")) {
            _ = try bench.makeReport()
        }
        #expect(usageError(["bench", "cache", "--trace", trace]) == "give exactly one of --capacity and --budget")
        #expect(
            usageError(["bench", "cache", "--trace", trace, "--capacity", "1", "--policy", "fifo"])
                == "unknown policy fifo; choose one of \(ResidencyPolicyKind.allCases.map(\.rawValue).joined(separator: ", ")) or all"
        )
        let good = dir.path + "/good.jsonl"
        try Data(
            (#"{"kind":"wstore.routing-trace","version":1,"layers":1,"experts":2,"top_k":1}"#
                + "\n{\"experts\":[[1]]}\n").utf8
        )
        .write(to: URL(fileURLWithPath: good))
        // No expert size known: --budget cannot be turned into a capacity.
        let budget = try #require(
            try WStoreCommand.parseAsRoot(["bench", "cache", "--trace", good, "--budget", "100"]) as? BenchCache)
        #expect(throws: WStoreError.self) { _ = try budget.makeReport() }
    }
}

@Suite("wstore bench cache --precision")
struct BenchCachePrecisionTests {
    @Test func lowBitCopiesReadFewerBytesAtTheSameBudget() throws {
        let dir = TemporaryDirectory()
        _ = try makeVariantExpertStore(at: dir.path + "/s", layers: 2, experts: 8)
        let trace = dir.path + "/t.jsonl"
        try synthesizeTrace(trace, layers: 2, experts: 8, requests: 2, tokens: 60)
        let bench = try #require(
            try WStoreCommand.parseAsRoot(
                [
                    "bench", "cache", "--trace", trace, "--capacity", "25%", "--store", dir.path + "/s", "--policy",
                    "lru", "--precision", "exact,q4_0,mixed",
                ]) as? BenchCache)
        let rows = try bench.makeReport().policies
        #expect(rows.map(\.precision) == ["exact", "q4_0", "mixed"])
        let exact = rows[0], q4 = rows[1]
        // Equal-sized Q4_0 copies: LRU over more slots misses no more often (LRU is a
        // stack algorithm), and each miss reads a smaller record.
        #expect(q4.hit_rate >= exact.hit_rate)
        #expect(q4.bytes_read_per_access! < exact.bytes_read_per_access!)
        #expect(q4.low_precision_loads! > 0 && exact.low_precision_loads == 0)
        #expect(q4.upgrade_loads == 0 && exact.gap_closed != nil && q4.gap_closed == nil)
    }

    @Test func badPrecisionsAreOneLineErrors() throws {
        let dir = TemporaryDirectory()
        let trace = dir.path + "/t.jsonl"
        try Data(
            (#"{"kind":"wstore.routing-trace","version":1,"layers":1,"experts":2,"top_k":1}"#
                + "\n{\"experts\":[[1]]}\n")
                .utf8
        ).write(to: URL(fileURLWithPath: trace))
        #expect(
            usageError(["bench", "cache", "--trace", trace, "--capacity", "1", "--store", "s", "--precision", "q3"])
                == "unknown --precision q3; use exact, mixed, q8_0 or q4_0, comma-separated")
        #expect(
            usageError(["bench", "cache", "--trace", trace, "--capacity", "1", "--precision", "exact,mixed"])
                == "--precision other than exact needs --store (a store packed with --expert-variants)")
    }
}

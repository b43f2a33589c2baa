import Testing
import WStoreReplay

@testable import WeightStore

/// `leader` takes the victims of whichever rule its shadow caches find best.
@Suite("The leader policy follows the rule that would have hit most")
struct LeaderPolicyTests {
    /// Hits of `policy` replaying `seq` (one layer, top-1) with room for `capacity`.
    static func replay(_ policy: any ResidencyPolicy, _ seq: [Int], experts: Int, capacity: Int) throws -> Int {
        let r = ResidencySimulator.run(try sequenceTrace(seq, experts: experts), policy: policy, capacity: capacity)
        return r.hits.reduce(0, +)
    }

    static func g1(_ experts: Int) -> ResidencyGeometry { ResidencyGeometry(layers: 1, experts: experts, topK: 1) }

    @Test func followsFrequencyWhenAHotExpertIsCycledOut() throws {
        // Expert 0 every third access among cold ones (cap 2): LRU never hits, LFU keeps 0.
        let seq = (0 ..< 300).map { $0 % 3 == 0 ? 0 : 1 + ($0 % 4) }
        let lru = try Self.replay(LRUPolicy(geometry: Self.g1(5)), seq, experts: 5, capacity: 2)
        let lfu = try Self.replay(LFUPolicy(geometry: Self.g1(5), capacity: 2), seq, experts: 5, capacity: 2)
        #expect(lru == 0 && lfu > 90)
        let leader = LeaderPolicy(geometry: Self.g1(5), capacity: 2, rules: [.lru, .lfu])
        let hits = try Self.replay(leader, seq, experts: 5, capacity: 2)
        #expect(leader.rules[leader.leader] == .lfu)
        // It starts behind LRU's victims (ties go to the first rule) and switches at the
        // first access where the LFU shadow has more hits; from then on it is LFU.
        #expect(hits >= lfu - 3)
        #expect(leader.shadowHits[1] > leader.shadowHits[0])
    }

    @Test func followsRecencyWhenTheWorkingSetMoves() throws {
        // A long phase on {0, 1}, then phases on {2, 3}, {4, 5}, ...: LFU (cap 2) clings to
        // the old favourites, LRU moves with the phase.
        var seq = Array(repeating: [0, 1], count: 40).flatMap { $0 }
        for p in 1 ..< 8 { seq += Array(repeating: [2 * p, 2 * p + 1], count: 30).flatMap { $0 } }
        let n = 16
        let lru = try Self.replay(LRUPolicy(geometry: Self.g1(n)), seq, experts: n, capacity: 2)
        let lfu = try Self.replay(LFUPolicy(geometry: Self.g1(n), capacity: 2), seq, experts: n, capacity: 2)
        #expect(lru > lfu)
        let leader = LeaderPolicy(geometry: Self.g1(n), capacity: 2, rules: [.lfu, .lru])
        let hits = try Self.replay(leader, seq, experts: n, capacity: 2)
        #expect(leader.rules[leader.leader] == .lru)
        #expect(hits > lfu && hits <= lru)
    }

    @Test func isTheDefaultAndFollowsOtherRulesOnly() {
        #expect(ResidencyPolicyKind.default == .leader)
        let p = ResidencyPolicyKind.leader.make(geometry: Self.g1(4), capacity: 2)
        #expect(p.name == "leader")
        #expect((p as? LeaderPolicy)?.rules == [.forecast, .adaptive, .lfu, .lru, .lruPerLayer])
    }

    @Test func eachShadowHitsAsItsRuleAloneWould() throws {
        // Forecast, adaptive and lfu rank the shadow's residents and the real ones from one
        // instance: each shadow must still hit exactly as its rule alone over a cache of the
        // same size, whichever rule the real cache follows. (A half-life of 10^12 turnovers
        // leaves the counts undecayed to far below one hit.)
        var x: UInt64 = 0x9E37_79B9_7F4A_7C15
        let seq = (0 ..< 3000).map { i -> Int in
            x = x &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            let r = Int(x >> 33)
            // A hot pair, a phase-dependent warm set, and a cold tail.
            return r % 3 == 0 ? r % 2 : r % 3 == 1 ? 2 + (i / 500) * 3 + r % 4 : 2 + r % 30
        }
        let n = 32, capacity = 6
        let rules: [ResidencyPolicyKind] = [.forecast, .adaptive, .lfu, .lru, .lruPerLayer]
        let leader = LeaderPolicy(geometry: Self.g1(n), capacity: capacity, rules: rules, halfLifeTurnovers: 1e12)
        _ = try Self.replay(leader, seq, experts: n, capacity: capacity)
        for (i, rule) in rules.enumerated() {
            let alone = try Self.replay(
                rule.make(geometry: Self.g1(n), capacity: capacity), seq, experts: n, capacity: capacity)
            #expect(abs(leader.shadowHits[i] - Double(alone)) < 0.01, "\(rule)")
        }
        #expect(Set(leader.shadowHits).count > 1, "the rules differ on this sequence")
    }
}

import Foundation
import Testing
import WStoreReplay
import WStoreTestSupport

@testable import WeightStore

@Suite("Cache-aware routing, the residency mask, per-layer stats")
struct CacheAwareRoutingTests {
    @Test func swapsANonResidentPickForACloseResidentCandidateButNeverTheTop1() {
        let experts = [4, 1, 7, 2, 5]
        let probs = [0.40, 0.20, 0.19, 0.15, 0.06]
        // Nothing resident but 7 and 2: the top-1 (4) stays; 1 (0.20) → 7 (0.19) is within 10%.
        let c = CacheAwareRouting.topK(experts: experts, probabilities: probs, k: 2, tolerance: 0.10) {
            [7, 2].contains($0)
        }
        #expect(c.experts == [4, 7] && c.swapped == 1)
        #expect(abs(c.massGivenUp - 0.01) < 1e-12)
        // 5% is too tight for 0.19 vs 0.20; 0 never swaps.
        #expect(
            CacheAwareRouting.topK(experts: experts, probabilities: probs, k: 2, tolerance: 0.04) {
                [7, 2].contains($0)
            }.swapped == 0)
        #expect(
            CacheAwareRouting.topK(experts: experts, probabilities: probs, k: 2, tolerance: 0) { _ in true }.experts
                == [4, 1])
        // Only a non-resident top-1 and everything else resident: still the router's top-1.
        let t = CacheAwareRouting.topK(experts: experts, probabilities: probs, k: 3, tolerance: 1) {
            $0 != 4 && $0 != 1
        }
        #expect(t.experts == [4, 2, 7] && t.swapped == 1)  // 1 swapped for the best resident left, 2
        // Candidates out of order are ranked first.
        #expect(
            CacheAwareRouting.topK(experts: [1, 4], probabilities: [0.2, 0.4], k: 1, tolerance: 0.5) { _ in false }
                .experts == [4])
    }

    @Test func maskFollowsLoadsAndEvictionsAndStatsSplitTheBudget() throws {
        let dir = TemporaryDirectory()
        let store = try makeExpertStore(at: dir.path + "/s", layers: 2, experts: 3)
        var options = ResidencyManager.Options()
        options.policy = .lru
        let m = try ResidencyManager(store: store, model: "m", budget: 3 * 3 * 1024, options: options)
        #expect(m.residencyMaskWords == 1 && m.residencyMask(layer: 0) == [0])
        for (l, e) in [(0, 0), (0, 2), (1, 1)] { try m.acquire(layer: l, expert: e).release() }
        #expect(m.residencyMask(layer: 0) == [0b101] && m.residencyMask(layer: 1) == [0b010])
        try m.acquire(layer: 1, expert: 0).release()  // evicts (0, 0), the least recent
        #expect(m.residencyMask(layer: 0) == [0b100] && m.residencyMask(layer: 1) == [0b011])
        var words = [UInt64](repeating: 9, count: 4)
        #expect(words.withUnsafeMutableBufferPointer { m.residencyMask(layer: 1, into: $0) } == 1 && words[0] == 0b011)
        let choice = m.residentAwareTopK(
            layer: 0, experts: [1, 0, 2], probabilities: [0.5, 0.3, 0.28], tolerance: 0.1)
        #expect(choice.experts == [1, 2])
        let s = m.stats()
        #expect(s.layers.map(\.residentExperts) == [1, 2])
        #expect(abs(s.residentShare[0] - 1.0 / 3) < 1e-9 && abs(s.residentShare[1] - 2.0 / 3) < 1e-9)
        #expect(s.layers[0].missRate == 1 && s.layers[1].missRate == 1)
        #expect(m.invariantViolation() == nil)
    }

    @Test func scoresRoundTripAndBadScoresNameTheLine() throws {
        let header = #"{"kind":"wstore.routing-trace","version":1,"layers":2,"experts":4,"top_k":1}"#
        let good = header + "\n" + #"{"experts":[[1],[3]],"scores":[[[1,0.5],[2,0.25]],null]}"# + "\n"
        let t = try RoutingTrace.parse(Data(good.utf8))
        #expect(t.hasScores)
        let s = try #require(t.scores(token: 0, layer: 0))
        #expect(Array(s.experts) == [1, 2] && Array(s.probabilities) == [0.5, 0.25])
        #expect(t.scores(token: 0, layer: 1) == nil)
        let again = try RoutingTrace.parse(try t.jsonLines())
        #expect(again.scores(token: 0, layer: 0).map { Array($0.experts) } == [1, 2])
        let rising = header + "\n" + #"{"experts":[[1],[3]],"scores":[[[1,0.2],[2,0.3]],null]}"# + "\n"
        #expect(throws: RoutingTraceError.malformed(line: 2, "\"scores\"[0] is not highest first")) {
            try RoutingTrace.parse(Data(rising.utf8))
        }
        let outside = header + "\n" + #"{"experts":[[1],[3]],"scores":[null,[[9,0.3]]]}"# + "\n"
        #expect(throws: RoutingTraceError.malformed(line: 2, "\"scores\"[1] names expert 9, outside 0..<4")) {
            try RoutingTrace.parse(Data(outside.utf8))
        }
    }

    @Test func replayWithCacheAwareRoutingCountsSwaps() throws {
        // One layer, 3 experts, top-1 plus a runner-up; the trace always picks 0 first with 1 close behind.
        var t = RoutingTrace(header: .init(layers: 1, experts: 3, topK: 2))
        for i in 0 ..< 20 {
            let second = i % 2 == 0 ? 1 : 2
            try t.append(
                request: 0, experts: [[0, second]], predicted: nil,
                scores: [[(0, 0.5), (second, 0.26), (3 - second, 0.24)]])
        }
        let g = t.header.geometry
        let plain = ResidencySimulator.run(
            t, policy: ResidencyPolicyKind.lru.make(geometry: g, capacity: 2), capacity: 2)
        let aware = ResidencySimulator.run(
            t, policy: ResidencyPolicyKind.lru.make(geometry: g, capacity: 2), capacity: 2,
            cacheAwareRouting: 0.1)
        // Without routing, 1 and 2 take turns in one slot: only expert 0 hits after the first token.
        #expect(plain.hits.reduce(0, +) == 19)
        // With it, the second pick stays whichever is resident: every access after the first token hits.
        #expect(aware.hits.reduce(0, +) == 38 && aware.swappedPicks == 10 && aware.routedPicks == 40)
        #expect(abs(aware.massGivenUp - 10 * 0.02) < 1e-6)
    }
}

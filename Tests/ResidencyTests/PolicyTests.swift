import Testing
import WStoreReplay

@testable import WeightStore

@Suite("Residency policies on hand-made traces")
struct PolicyTests {
    @Test func lruEvictsTheLeastRecent() throws {
        // cap 2: 0m 1m 0h 2m(evicts 1) 1m(evicts 0) 0m → one hit.
        let t = try sequenceTrace([0, 1, 0, 2, 1, 0], experts: 3)
        #expect(hits(.lru, t, capacity: 2) == 1)
    }

    @Test func lfuKeepsTheFrequentAndLRUDoesNot() throws {
        // 0m 0h 0h 1m 2m 1m 2m 0 → LFU keeps 0 (3 hits); LRU evicts it at the first 2 (4 hits: 1,2 reused).
        let t = try sequenceTrace([0, 0, 0, 1, 2, 1, 2, 0], experts: 3)
        #expect(hits(.lfu, t, capacity: 2) == 3)
        #expect(hits(.lru, t, capacity: 2) == 4)
    }

    @Test func frequencyAwarePoliciesKeepAHotExpertThatLRUCycles() throws {
        // 0 every third access among a cycle of cold experts: LRU (cap 2) always evicts 0.
        let seq = (0 ..< 30).map { $0 % 3 == 0 ? 0 : 1 + ($0 % 4) }
        let t = try sequenceTrace(seq, experts: 5)
        let zeros = seq.filter { $0 == 0 }.count
        // The first 0 loses a tie at the third access (one use each, 0 the older); from
        // its second use on, 0 is the most frequent and stays.
        #expect(hits(.lru, t, capacity: 2) == 0)
        #expect(hits(.lfu, t, capacity: 2) == zeros - 2)
        #expect(hits(.adaptive, t, capacity: 2) == zeros - 2)
    }

    @Test func perLayerQuotasAreEqual() {
        let p = LRUPerLayerPolicy(geometry: .init(layers: 4, experts: 8, topK: 2), capacity: 10)
        #expect(p.quotas == [3, 3, 2, 2])
    }

    @Test func shallowKeepsFirstLayersResidentWhenTheBudgetAllows() {
        let g = ResidencyGeometry(layers: 8, experts: 4, topK: 2)
        let a = ShallowPolicy(geometry: g, capacity: 24)
        #expect(a.residentLayers == 4 && a.quotas == [4, 4, 4, 4, 2, 2, 2, 2])
        // 20 slots: four full layers would leave deep layers under top-k, so only two.
        let b = ShallowPolicy(geometry: g, capacity: 20)
        #expect(b.residentLayers == 2 && b.quotas == [4, 4, 2, 2, 2, 2, 2, 2])
        #expect(b.quotas.reduce(0, +) == 20)
    }

    @Test func shallowBeatsLRUOnACyclicShallowLayer() throws {
        // 2 layers × 4 experts, top-1, cap 5: both layers cycle 0..3.
        // shallow: layer 0 fully resident (quota 4) → hits after the first cycle; layer 1 (quota 1) never.
        let tokens = (0 ..< 12).map { t in [[t % 4], [t % 4]] }
        let t = try handTrace(layers: 2, experts: 4, topK: 1, tokens)
        #expect(hits(.shallow, t, capacity: 5) == 8)
        #expect(hits(.lru, t, capacity: 5) == 0)
        #expect(hits(.lruPerLayer, t, capacity: 5) == 0)
    }

    @Test func lruPerLayerProtectsALayerFromAnother() throws {
        // 2 layers × 2 experts, top-1, cap 3 → quotas [2, 1]. Both layers alternate 0, 1.
        // Per layer: layer 0 keeps both its experts (hits from the third token on), layer 1
        // always misses. One LRU list over 4 experts cycling through 3 slots never hits.
        let tokens = (0 ..< 9).map { t in [[t % 2], [t % 2]] }
        let t = try handTrace(layers: 2, experts: 2, topK: 1, tokens)
        #expect(hits(.lruPerLayer, t, capacity: 3) == 7)
        #expect(hits(.lru, t, capacity: 3) == 0)
        // Asked directly: a layer at its quota replaces within itself, even when another
        // layer holds the least recent expert.
        let g = ResidencyGeometry(layers: 2, experts: 3, topK: 1)
        let p = ResidencyPolicyKind.lruPerLayer.make(geometry: g, capacity: 2)
        let a = g.id(layer: 0, expert: 0), b = g.id(layer: 1, expert: 0), c = g.id(layer: 1, expert: 1)
        for id in [a, b] {
            p.accessed(id, hit: false)
            p.inserted(id, prefetched: false)
        }
        p.accessed(c, hit: false)
        #expect(p.victim(for: c) { _ in false } == b)
        let plain = ResidencyPolicyKind.lru.make(geometry: g, capacity: 2)
        for id in [a, b] {
            plain.accessed(id, hit: false)
            plain.inserted(id, prefetched: false)
        }
        #expect(plain.victim(for: c) { _ in false } == a)
    }

    @Test func prefetchTurnsRightPredictionsIntoHits() throws {
        // With prefetch, a correct prediction turns every access into a hit after its load.
        let tokens = (0 ..< 20).map { t in [[t % 2], [(t + 1) % 3]] }
        let predicted: [[[Int]?]] = tokens.map { tok in [nil, tok[1]] }
        let t = try handTrace(layers: 2, experts: 3, topK: 1, tokens, predicted: predicted)
        let r = ResidencySimulator.run(
            t, policy: ResidencyPolicyKind.adaptive.make(geometry: t.header.geometry, capacity: 3),
            capacity: 3, prefetch: true)
        #expect(r.hits[1] == r.accesses[1])
        #expect(r.prefetchLoads + r.demandLoads >= 3)
    }

    @Test func everyPolicyRespectsCapacityAndCountsConsistently() throws {
        var synth = TraceSynth()
        synth.layers = 6
        synth.experts = 8
        synth.requests = 3
        synth.tokensPerRequest = 40
        let t = try synth.generate()
        for kind in ResidencyPolicyKind.allCases {
            for prefetch in [false, true] {
                let r = ResidencySimulator.run(
                    t, policy: kind.make(geometry: t.header.geometry, capacity: 12),
                    capacity: 12, prefetch: prefetch)
                #expect(r.accessCount == t.accessCount)
                #expect(r.hits.reduce(0, +) + r.demandLoads == r.accessCount, "\(kind)")
                #expect(r.prefetchHits + r.wastedPrefetches <= r.prefetchLoads, "\(kind)")
                if !prefetch {
                    // MIN is optimal for demand paging.
                    #expect(r.hitRate <= BeladyMIN.run(t, capacity: 12).hitRate + 1e-12, "\(kind)")
                }
            }
        }
    }
}

import Testing
import WStoreReplay

@testable import WeightStore

@Suite("Belady's MIN")
struct BeladyMINTests {
    @Test func knownAnswer() {
        // cap 2: 0 1 0 2 1 → at 2, evict 0 (never used again) → 1 hits. Hits: 0(3rd), 1(5th).
        #expect(BeladyMIN.hits([0, 1, 0, 2, 1], capacity: 2, idCount: 3) == [false, false, true, false, true])
    }

    /// The fewest misses any demand-paging schedule can have, by trying every victim.
    private func bruteForceMisses(_ seq: [Int], capacity: Int) -> Int {
        func go(_ i: Int, _ cache: Set<Int>) -> Int {
            if i == seq.count { return 0 }
            let x = seq[i]
            if cache.contains(x) { return go(i + 1, cache) }
            if cache.count < capacity { return 1 + go(i + 1, cache.union([x])) }
            var best = Int.max
            for v in cache {
                var c = cache
                c.remove(v)
                c.insert(x)
                best = min(best, go(i + 1, c))
            }
            return 1 + best
        }
        return go(0, [])
    }

    @Test func matchesBruteForceOnTinyTraces() {
        var rng = SystemRandomNumberGenerator()
        for _ in 0 ..< 300 {
            let n = Int.random(in: 1 ... 10, using: &rng)
            let ids = Int.random(in: 1 ... 5, using: &rng)
            let cap = Int.random(in: 1 ... 3, using: &rng)
            let seq = (0 ..< n).map { _ in Int.random(in: 0 ..< ids, using: &rng) }
            let minMisses = BeladyMIN.hits(seq, capacity: cap, idCount: ids).filter { !$0 }.count
            #expect(minMisses == bruteForceMisses(seq, capacity: cap), "\(seq) cap \(cap)")
        }
    }

    @Test func perLayerCountsAddUp() throws {
        let t = try handTrace(layers: 2, experts: 3, topK: 1, [[[0], [1]], [[0], [2]], [[1], [1]], [[0], [1]]])
        let r = BeladyMIN.run(t, capacity: 2)
        #expect(r.accesses == [4, 4])
        #expect(r.hits.reduce(0, +) + r.demandLoads == 8)
    }
}

import Testing

@testable import WeightStore

@Suite("Adaptive policy: rate over two half-lives")
struct AdaptiveRateTests {
    /// One layer of 4 experts, top-1: A (0) and D (3) alternate for 400 tokens, then B (1)
    /// and D for 100, then C (2) and D. A was popular long ago, B lately; D was just used.
    private func replay(_ policy: AdaptivePolicy) {
        var seq: [Int] = []
        for t in 0 ..< 400 { seq.append(t % 2 == 0 ? 0 : 3) }
        for t in 0 ..< 100 { seq.append(t % 2 == 0 ? 1 : 3) }
        seq += [2, 3]
        for id in seq { policy.accessed(id, hit: false) }
        for id in [0, 1, 3] { policy.inserted(id, prefetched: false) }
    }

    private let g = ResidencyGeometry(layers: 1, experts: 4, topK: 1)

    @Test func shortHalfLifeFollowsTheRecentExpertAndLongOneThePopularOne() {
        let short = AdaptivePolicy(geometry: g, capacity: 3, halfLives: [64])
        let long = AdaptivePolicy(geometry: g, capacity: 3, halfLives: [512])
        replay(short)
        replay(long)
        // Short (64 tokens): A ≈ 0.16, B ≈ 0.32. Long (512): A ≈ 0.18, B ≈ 0.06.
        #expect(short.score(1) > 1.5 * short.score(0))
        #expect(long.score(0) > 2 * long.score(1))
        #expect(short.victim(for: 2, isPinned: { _ in false }) == 0)
        #expect(long.victim(for: 2, isPinned: { _ in false }) == 1)
    }

    @Test func defaultRateIsTheMeanOfBothEstimates() {
        let both = AdaptivePolicy(geometry: g, capacity: 3)
        let short = AdaptivePolicy(geometry: g, capacity: 3, halfLives: [64])
        let long = AdaptivePolicy(geometry: g, capacity: 3, halfLives: [512])
        #expect(both.halfLives == [64, 512])
        replay(both)
        replay(short)
        replay(long)
        // A and B have no reuse or hint bonus (neither was used by the previous token).
        for id in [0, 1] {
            #expect(abs(both.score(id) - (short.score(id) + long.score(id)) / 2) < 1e-12)
        }
        // The mean still ranks the lately popular B (≈ 0.19) above A (≈ 0.17): A leaves.
        #expect(both.score(1) > both.score(0))
        #expect(both.victim(for: 2, isPinned: { _ in false }) == 0)
        // Pinning A makes B the victim: D, used every other token all along, stays.
        #expect(both.victim(for: 2, isPinned: { $0 == 0 }) == 1)
    }

    @Test func singleHalfLifeInitializerKeepsOneEstimate() {
        let p = AdaptivePolicy(geometry: g, capacity: 3, halfLifeTokens: 128)
        #expect(p.halfLives == [128] && p.halfLifeTokens == 128)
    }
}

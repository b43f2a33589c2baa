/// Cache-aware routing: an engine that knows which experts are resident may take a
/// resident expert in place of a non-resident pick whose router probability is nearly the
/// same (arXiv 2412.00099 reports over 50% fewer misses at a small quality cost).
public enum CacheAwareRouting {
    /// What ``topK(experts:probabilities:k:tolerance:isResident:)`` chose.
    public struct Choice: Sendable, Equatable {
        /// The `k` experts to run, the router's order kept where nothing was swapped.
        public var experts: [Int]
        /// How many of the picks were swapped for a resident candidate.
        public var swapped: Int
        /// Router probability given up: the swapped-out picks' minus the swapped-in ones'.
        public var massGivenUp: Double
    }

    /// The top-`k` of a layer's candidates after swapping each non-resident pick (never the
    /// top-1) for the most probable resident candidate outside the picks whose probability
    /// is at least `(1 − tolerance)` times the pick's own.
    ///
    /// - Parameters:
    ///   - experts: candidate experts, any order, no repeats.
    ///   - probabilities: their router probabilities, same order.
    ///   - tolerance: relative, in `0...1` (0 never swaps).
    ///   - isResident: whether an expert is resident now.
    /// - Precondition: `experts.count == probabilities.count`, `1 ≤ k`.
    /// - Complexity: O(n log n + k·n) for `n` candidates.
    public static func topK(
        experts: some Collection<Int>, probabilities: some Collection<Double>, k: Int,
        tolerance: Double, isResident: (Int) -> Bool
    ) -> Choice {
        precondition(experts.count == probabilities.count, "one probability per candidate")
        precondition(k >= 1, "k must be at least 1")
        let ranked = zip(experts, probabilities).sorted { $0.1 > $1.1 }
        let n = min(k, ranked.count)
        var picks = Array(ranked.prefix(n))
        var taken = Array(repeating: false, count: ranked.count)
        for i in 0 ..< n { taken[i] = true }
        var swapped = 0, lost = 0.0
        let tol = min(1, max(0, tolerance))
        if tol > 0 {
            for i in 1 ..< max(1, n) where !isResident(picks[i].0) {
                let floor = (1 - tol) * picks[i].1
                // The most probable resident candidate not yet picked, if close enough.
                guard
                    let j = ranked.indices.first(where: {
                        !taken[$0] && ranked[$0].1 >= floor && isResident(ranked[$0].0)
                    })
                else { continue }
                taken[j] = true
                lost += picks[i].1 - ranked[j].1
                picks[i] = ranked[j]
                swapped += 1
            }
        }
        return Choice(experts: picks.map(\.0), swapped: swapped, massGivenUp: lost)
    }
}

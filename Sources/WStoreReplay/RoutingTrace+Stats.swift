import WStoreCore
import WeightStore

/// Measured facts of a routing trace, to check that it looks like real routing.
public struct RoutingTraceStats: Sendable {
    /// Per layer: the most popular expert's share of the layer's picks.
    public var topShare: [Double]
    /// Per layer: the fraction of a token's experts that the previous token of the same
    /// request also used.
    public var reuse: [Double]
    /// Per layer: the same fraction expected by chance under the layer's popularity.
    public var chanceReuse: [Double]
    /// Per layer: the fraction of predicted experts that were right (`nil` without predictions).
    public var accuracy: [Double?]

    /// Measures `trace`.
    public init(_ trace: RoutingTrace) {
        let L = trace.header.layers, E = trace.header.experts
        var picks = [Int](repeating: 0, count: L * E), total = [Int](repeating: 0, count: L)
        var reused = [Int](repeating: 0, count: L), reuseBase = [Int](repeating: 0, count: L)
        var right = [Int](repeating: 0, count: L), guessed = [Int](repeating: 0, count: L)
        for t in 0 ..< trace.tokenCount {
            let sameRequest = t > 0 && trace.requests[t] == trace.requests[t - 1]
            for l in 0 ..< L {
                let now = trace.experts(token: t, layer: l)
                for e in now { picks[l * E + Int(e)] += 1 }
                total[l] += now.count
                if sameRequest {
                    let before = trace.experts(token: t - 1, layer: l)
                    reused[l] += now.filter { before.contains($0) }.count
                    reuseBase[l] += now.count
                }
                if let p = trace.predicted(token: t, layer: l) {
                    right[l] += p.filter { now.contains($0) }.count
                    guessed[l] += p.count
                }
            }
        }
        topShare = (0 ..< L).map { l in Double(picks[l * E ..< (l + 1) * E].max() ?? 0) / Double(max(1, total[l])) }
        reuse = (0 ..< L).map { Double(reused[$0]) / Double(max(1, reuseBase[$0])) }
        // Chance: a pick of the next token lands on one of this token's k experts.
        chanceReuse = (0 ..< L).map { l in
            let p = picks[l * E ..< (l + 1) * E].map { Double($0) / Double(max(1, total[l])) }
            let k = Double(total[l]) / Double(max(1, trace.tokenCount))
            return min(1, k * p.reduce(0) { $0 + $1 * $1 })
        }
        accuracy = (0 ..< L).map { guessed[$0] > 0 ? Double(right[$0]) / Double(guessed[$0]) : nil }
    }
}

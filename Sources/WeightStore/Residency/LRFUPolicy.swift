import Foundation

/// `lrfu`, Least Recently/Frequently Used (Lee et al., IEEE ToC 2001): every expert's
/// combined recency and frequency, `Σ 2^(−λ·age)` over its past demand uses (ages in
/// accesses), decides; the smallest leaves. λ spans LFU (λ → 0) to LRU (λ = 1); here the
/// weight of a use halves every ``halfLifeAccesses`` accesses, twice the budget in
/// experts, so an expert must be used about as often as the cache turns over to stay.
public final class LRFUPolicy: ResidencyPolicy {
    public let name = "lrfu"
    /// Accesses over which a use's weight halves.
    public let halfLifeAccesses: Double
    private var value: [Double]
    private var stamp: [Double]
    private var clock = 0.0
    private var resident: ResidentSet

    /// LRFU over `geometry` with room for `capacity` experts.
    public init(geometry: ResidencyGeometry, capacity: Int) {
        halfLifeAccesses = Double(max(1, 2 * capacity))
        value = Array(repeating: 0, count: geometry.count)
        stamp = Array(repeating: 0, count: geometry.count)
        resident = ResidentSet(count: geometry.count)
    }

    private func crf(_ id: Int) -> Double { value[id] * exp2(-(clock - stamp[id]) / halfLifeAccesses) }

    public func accessed(_ id: Int, hit: Bool) {
        value[id] = crf(id) + 1
        stamp[id] = clock
        clock += 1
    }

    public func hinted(_ id: Int) {}
    public func inserted(_ id: Int, prefetched: Bool) { resident.insert(id) }
    public func removed(_ id: Int) { resident.remove(id) }

    public func victim(for incoming: Int, isPinned: (Int) -> Bool) -> Int? {
        var best = -1, bestValue = Double.infinity
        for id in resident.members where id != incoming && !isPinned(id) {
            let v = crf(id)
            if v < bestValue || (v == bestValue && stamp[id] < stamp[best]) {
                best = id
                bestValue = v
            }
        }
        return best >= 0 ? best : nil
    }
}

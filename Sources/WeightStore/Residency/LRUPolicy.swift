import WStoreCore

/// `lru`: one least-recently-used list over every layer; evicts the expert whose last
/// use is oldest. Prefetched experts enter as most recent.
///
/// Mixed precision: an expert held low-bit is upgraded to exact once it has been hit
/// ``upgradeAfterHits`` times while held low-bit: repeated reuse within its residency is
/// the recency LRU bets on, while an expert used once or twice stays low-bit, at a fraction
/// of the bytes (upgrading on the first reuse measured no better than exact-only: nearly
/// every expert is reused once, so nearly every one was upgraded).
public final class LRUPolicy: ResidencyPolicy {
    public let name = "lru"
    /// Hits while held low-bit after which an expert is upgraded to exact.
    public var upgradeAfterHits = 4
    @exclusivity(unchecked) private var lists: IntrusiveLists
    @exclusivity(unchecked) private var lowHits: [Int]

    /// An LRU policy over `geometry`.
    public init(geometry: ResidencyGeometry) {
        lists = IntrusiveLists(ids: geometry.count, lists: 1)
        lowHits = Array(repeating: 0, count: geometry.count)
    }

    public func accessed(_ id: Int, hit: Bool) {
        if hit {
            lowHits[id] += 1
            lists.moveToFront(id)
        }
    }
    public func upgrades(_ id: Int) -> Bool { lowHits[id] >= upgradeAfterHits }
    public func held(_ id: Int, at precision: ExpertPrecision) { lowHits[id] = 0 }
    public func hinted(_ id: Int) {}
    public func inserted(_ id: Int, prefetched: Bool) { lists.pushFront(id, list: 0) }
    public func removed(_ id: Int) {
        lists.remove(id)
        lowHits[id] = 0
    }

    public func victim(for incoming: Int, isPinned: (Int) -> Bool) -> Int? {
        let v = lists.leastRecent(0, excluding: incoming, isPinned: isPinned)
        return v >= 0 ? v : nil
    }
}

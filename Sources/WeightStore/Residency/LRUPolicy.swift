/// `lru`: one least-recently-used list over every layer; evicts the expert whose last
/// use is oldest. Prefetched experts enter as most recent.
public final class LRUPolicy: ResidencyPolicy {
    public let name = "lru"
    private var lists: IntrusiveLists

    /// An LRU policy over `geometry`.
    public init(geometry: ResidencyGeometry) {
        lists = IntrusiveLists(ids: geometry.count, lists: 1)
    }

    public func accessed(_ id: Int, hit: Bool) { if hit { lists.moveToFront(id) } }
    public func hinted(_ id: Int) {}
    public func inserted(_ id: Int, prefetched: Bool) { lists.pushFront(id, list: 0) }
    public func removed(_ id: Int) { lists.remove(id) }

    public func victim(for incoming: Int, isPinned: (Int) -> Bool) -> Int? {
        let v = lists.leastRecent(0, excluding: incoming, isPinned: isPinned)
        return v >= 0 ? v : nil
    }
}

/// `lru`: one least-recently-used list over every layer; evicts the expert whose last
/// use is oldest. Prefetched experts enter as most recent.
///
/// Mixed precision: an expert held low-bit is upgraded to exact only when it is used
/// again while resident (a hit on its low-bit copy): a second use within its residency
/// is the reuse LRU bets on; an expert used once stays low-bit, at a fraction of the bytes.
public final class LRUPolicy: ResidencyPolicy {
    public let name = "lru"
    private var lists: IntrusiveLists
    private var lastWasHit: [Bool]

    /// An LRU policy over `geometry`.
    public init(geometry: ResidencyGeometry) {
        lists = IntrusiveLists(ids: geometry.count, lists: 1)
        lastWasHit = Array(repeating: false, count: geometry.count)
    }

    public func accessed(_ id: Int, hit: Bool) {
        lastWasHit[id] = hit
        if hit { lists.moveToFront(id) }
    }
    public func upgrades(_ id: Int) -> Bool { lastWasHit[id] }
    public func hinted(_ id: Int) {}
    public func inserted(_ id: Int, prefetched: Bool) { lists.pushFront(id, list: 0) }
    public func removed(_ id: Int) { lists.remove(id) }

    public func victim(for incoming: Int, isPinned: (Int) -> Bool) -> Int? {
        let v = lists.leastRecent(0, excluding: incoming, isPinned: isPinned)
        return v >= 0 ? v : nil
    }
}

/// `slru`, segmented LRU (Karedla, Love and Wherry 1994): a new expert enters a
/// probationary segment and moves to a protected one on its second use; the protected
/// segment holds at most ``protectedShare`` of the budget, its least recent expert
/// falling back to probation. Victims come from probation first.
public final class SLRUPolicy: ResidencyPolicy {
    public let name = "slru"
    private static let probation = 0, protected = 1
    /// The share of the budget the protected segment may hold (80%, as Caffeine uses).
    public let protectedShare = 0.8
    private let protectedSlots: Int
    private var lists: IntrusiveLists

    /// SLRU over `geometry` with room for `capacity` experts.
    public init(geometry: ResidencyGeometry, capacity: Int) {
        protectedSlots = max(1, Int(Double(capacity) * protectedShare))
        lists = IntrusiveLists(ids: geometry.count, lists: 2)
    }

    public func accessed(_ id: Int, hit: Bool) {
        guard hit, lists.contains(id) else { return }
        if lists.list(of: id) == Self.protected {
            lists.moveToFront(id)
            return
        }
        lists.remove(id)
        lists.pushFront(id, list: Self.protected)
        if lists.counts[Self.protected] > protectedSlots {
            let demoted = lists.tail(Self.protected)
            lists.remove(demoted)
            lists.pushFront(demoted, list: Self.probation)
        }
    }

    public func hinted(_ id: Int) {}
    public func inserted(_ id: Int, prefetched: Bool) { lists.pushFront(id, list: Self.probation) }
    public func removed(_ id: Int) { lists.remove(id) }

    public func victim(for incoming: Int, isPinned: (Int) -> Bool) -> Int? {
        for l in [Self.probation, Self.protected] {
            let v = lists.leastRecent(l, excluding: incoming, isPinned: isPinned)
            if v >= 0 { return v }
        }
        return nil
    }
}

/// `arc`, Adaptive Replacement Cache (Megiddo and Modha, FAST 2003): experts used once
/// recently (`T1`) and experts used at least twice (`T2`), each LRU, with ghost lists of
/// what each recently evicted (`B1`, `B2`). A miss on a `B1` ghost says recency needed more
/// room, one on a `B2` ghost that frequency did; the target size of `T1` moves accordingly.
///
/// On demand accesses alone it is the algorithm of the paper's Figure 4, step for step,
/// `p` (``target``) moving by fractions as written. A prefetched expert enters `T1`; its
/// first demand use promotes it to `T2`.
public final class ARCPolicy: ResidencyPolicy {
    public let name = "arc"
    private static let t1 = 0, t2 = 1, b1 = 2, b2 = 3
    private let capacity: Int
    private var lists: IntrusiveLists
    /// The target size of `T1`, in `0...capacity`.
    public private(set) var target = 0.0
    private var pendingFrequent: [Bool]
    private var lastMissWasB2 = false
    private var dropT1Victim = false

    /// ARC over `geometry` with room for `capacity` experts.
    public init(geometry: ResidencyGeometry, capacity: Int) {
        self.capacity = max(1, capacity)
        lists = IntrusiveLists(ids: geometry.count, lists: 4)
        pendingFrequent = Array(repeating: false, count: geometry.count)
    }

    private func count(_ l: Int) -> Int { lists.counts[l] }

    public func accessed(_ id: Int, hit: Bool) {
        if hit {
            lists.remove(id)
            lists.pushFront(id, list: Self.t2)
            return
        }
        lastMissWasB2 = false
        switch lists.contains(id) ? lists.list(of: id) : -1 {
        case Self.b1:
            target = min(Double(capacity), target + max(1, Double(count(Self.b2)) / Double(max(1, count(Self.b1)))))
            lists.remove(id)
            pendingFrequent[id] = true
        case Self.b2:
            target = max(0, target - max(1, Double(count(Self.b1)) / Double(max(1, count(Self.b2)))))
            lists.remove(id)
            pendingFrequent[id] = true
            lastMissWasB2 = true
        default:
            pendingFrequent[id] = false
            // Keep |T1| + |B1| at most c and the directory at most 2c (the paper's case IV).
            let l1 = count(Self.t1) + count(Self.b1)
            if l1 >= capacity {
                if count(Self.b1) > 0 {
                    lists.remove(lists.tail(Self.b1))
                } else {
                    dropT1Victim = true  // T1 alone fills the cache: its oldest leaves no ghost
                }
            } else if l1 + count(Self.t2) + count(Self.b2) >= 2 * capacity, count(Self.b2) > 0 {
                lists.remove(lists.tail(Self.b2))
            }
        }
    }

    public func hinted(_ id: Int) {}

    public func inserted(_ id: Int, prefetched: Bool) {
        if lists.contains(id) { lists.remove(id) }  // a prefetched ghost: back without adapting
        dropT1Victim = false
        lists.pushFront(id, list: !prefetched && pendingFrequent[id] ? Self.t2 : Self.t1)
        pendingFrequent[id] = false
    }

    public func removed(_ id: Int) {
        guard lists.contains(id) else { return }
        let l = lists.list(of: id)
        lists.remove(id)
        if l == Self.t1 {
            if !dropT1Victim { lists.pushFront(id, list: Self.b1) }
            dropT1Victim = false
        } else if l == Self.t2 {
            lists.pushFront(id, list: Self.b2)
        }
        // With a full cache the ghosts are at most c (prefetches can push them past it).
        while count(Self.b1) + count(Self.b2) > capacity {
            lists.remove(lists.tail(count(Self.b1) > count(Self.b2) ? Self.b1 : Self.b2))
        }
    }

    public func victim(for incoming: Int, isPinned: (Int) -> Bool) -> Int? {
        let t1 = Double(count(Self.t1))
        let fromT1 = t1 > 0 && (t1 > target || (lastMissWasB2 && t1 == target))
        let order = fromT1 ? [Self.t1, Self.t2] : [Self.t2, Self.t1]
        for l in order {
            let v = lists.leastRecent(l, excluding: incoming, isPinned: isPinned)
            if v >= 0 { return v }
        }
        return nil
    }
}

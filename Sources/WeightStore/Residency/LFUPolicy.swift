/// `lfu` with aging: evicts the resident expert used least often, counting every demand
/// access (resident or not); every `agingPeriod` accesses all counts are halved so that
/// old popularity fades. Ties go to the least recently used.
public final class LFUPolicy: RankingPolicy {
    public let name = "lfu"
    /// Demand accesses between two halvings of every count.
    public let agingPeriod: Int
    @exclusivity(unchecked) private var counts: [Float]
    @exclusivity(unchecked) private var lastUse: [Int]
    @exclusivity(unchecked) private var clock = 0
    @exclusivity(unchecked) private var resident: ResidentSet

    /// An LFU policy; counts halve every `8 × capacity` accesses.
    public init(geometry: ResidencyGeometry, capacity: Int) {
        agingPeriod = max(64, 8 * capacity)
        counts = Array(repeating: 0, count: geometry.count)
        lastUse = Array(repeating: 0, count: geometry.count)
        resident = ResidentSet(count: geometry.count)
    }

    public func accessed(_ id: Int, hit: Bool) {
        clock += 1
        counts[id] += 1
        lastUse[id] = clock
        if clock % agingPeriod == 0 {
            for i in counts.indices { counts[i] *= 0.5 }
        }
    }

    public func hinted(_ id: Int) {}

    public func inserted(_ id: Int, prefetched: Bool) { resident.insert(id) }

    public func removed(_ id: Int) { resident.remove(id) }

    public func victim(for incoming: Int, isPinned: (Int) -> Bool) -> Int? {
        victim(among: resident.members, for: incoming, isPinned: isPinned)
    }

    func victim(among members: [Int], for incoming: Int, isPinned: (Int) -> Bool) -> Int? {
        ResidentSet.leastFrequent(
            among: members, counts: counts, lastUse: lastUse, excluding: incoming, isPinned: isPinned)
    }
}

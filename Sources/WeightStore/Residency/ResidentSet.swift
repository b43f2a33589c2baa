/// The resident expert ids of a policy that scans them all to pick a victim: O(1)
/// insert and remove (the last member fills the hole), iteration in no set order.
struct ResidentSet {
    /// The members.
    private(set) var members: [Int] = []
    /// Index of each id in `members`, or -1.
    private var position: [Int]

    /// An empty set of ids in `0 ..< count`.
    init(count: Int) { position = Array(repeating: -1, count: count) }

    /// Adds `id`, which must not be a member.
    mutating func insert(_ id: Int) {
        precondition(position[id] < 0, "expert \(id) inserted twice")
        position[id] = members.count
        members.append(id)
    }

    /// Removes `id` if it is a member.
    mutating func remove(_ id: Int) {
        let p = position[id]
        guard p >= 0 else { return }
        let last = members.removeLast()
        if last != id {
            members[p] = last
            position[last] = p
        }
        position[id] = -1
    }

    /// The member with the lowest `counts[id]`, the least recently used (`lastUse`) among
    /// equals, leaving out `incoming` and pinned ones: the victim of the frequency policies
    /// (LFU with aging, windowed frequency). `nil` when no member may go.
    func leastFrequent<C: Comparable>(
        counts: [C], lastUse: [Int], excluding incoming: Int,
        isPinned: (Int) -> Bool
    ) -> Int? {
        Self.leastFrequent(among: members, counts: counts, lastUse: lastUse, excluding: incoming, isPinned: isPinned)
    }

    /// ``leastFrequent(counts:lastUse:excluding:isPinned:)`` over `members`, in their order.
    static func leastFrequent<C: Comparable>(
        among members: [Int], counts: [C], lastUse: [Int], excluding incoming: Int,
        isPinned: (Int) -> Bool
    ) -> Int? {
        var best = -1
        for id in members where id != incoming && !isPinned(id) {
            if best < 0 || counts[id] < counts[best] || (counts[id] == counts[best] && lastUse[id] < lastUse[best]) {
                best = id
            }
        }
        return best >= 0 ? best : nil
    }
}

/// A policy whose learnt state depends only on the accesses and hints it sees, never on
/// what is resident, at which precision, or on whether an access hit: its resident set serves only to list
/// the candidates of ``victim(for:isPinned:)``. One instance can thus rank the residents
/// of several caches fed the same accesses (``LeaderPolicy`` runs each such rule once
/// for its shadow cache and the real one).
protocol RankingPolicy: ResidencyPolicy {
    /// The victim among `members` (resident in some cache fed the same accesses and hints),
    /// in their order on ties, as ``victim(for:isPinned:)`` picks among this policy's own.
    func victim(among members: [Int], for incoming: Int, isPinned: (Int) -> Bool) -> Int?
}

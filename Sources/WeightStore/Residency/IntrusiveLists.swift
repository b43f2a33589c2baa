/// Doubly linked lists of small integer ids kept in flat arrays: every id is on at most
/// one list at a time, and push, remove and move-to-front are O(1) with no allocation.
/// Lists are ordered most recent first; walk from ``tail(_:)`` with ``previous(_:)``
/// for the least recent.
struct IntrusiveLists {
    private var prev: [Int32]
    private var next: [Int32]
    private var owner: [Int32]
    private var heads: [Int32]
    private var tails: [Int32]
    private(set) var counts: [Int]

    init(ids: Int, lists: Int) {
        prev = Array(repeating: -1, count: ids)
        next = Array(repeating: -1, count: ids)
        owner = Array(repeating: -1, count: ids)
        heads = Array(repeating: -1, count: lists)
        tails = Array(repeating: -1, count: lists)
        counts = Array(repeating: 0, count: lists)
    }

    func contains(_ id: Int) -> Bool { owner[id] >= 0 }
    func list(of id: Int) -> Int { Int(owner[id]) }
    /// The least recent id of `list`, or -1.
    func tail(_ list: Int) -> Int { Int(tails[list]) }
    /// The id before `id` (more recent), or -1.
    func previous(_ id: Int) -> Int { Int(prev[id]) }

    mutating func pushFront(_ id: Int, list: Int) {
        precondition(owner[id] < 0, "id \(id) is already on a list")
        owner[id] = Int32(list)
        prev[id] = -1
        next[id] = heads[list]
        if heads[list] >= 0 { prev[Int(heads[list])] = Int32(id) } else { tails[list] = Int32(id) }
        heads[list] = Int32(id)
        counts[list] += 1
    }

    mutating func remove(_ id: Int) {
        let l = Int(owner[id])
        guard l >= 0 else { return }
        let p = prev[id], n = next[id]
        if p >= 0 { next[Int(p)] = n } else { heads[l] = n }
        if n >= 0 { prev[Int(n)] = p } else { tails[l] = p }
        owner[id] = -1
        counts[l] -= 1
    }

    mutating func moveToFront(_ id: Int) {
        let l = Int(owner[id])
        guard l >= 0, heads[l] != Int32(id) else { return }
        remove(id)
        pushFront(id, list: l)
    }

    /// The least recent id of `list` that is not `excluding` and not pinned, or -1.
    func leastRecent(_ list: Int, excluding: Int, isPinned: (Int) -> Bool) -> Int {
        var cur = Int(tails[list])
        while cur >= 0 {
            if cur != excluding && !isPinned(cur) { return cur }
            cur = Int(prev[cur])
        }
        return -1
    }
}

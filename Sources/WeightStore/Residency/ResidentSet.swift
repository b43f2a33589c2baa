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
}

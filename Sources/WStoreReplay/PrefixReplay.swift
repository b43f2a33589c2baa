import WStoreCore
import WeightStore

/// Replays a request trace against a prefix-block cache and counts hits.
///
/// Per request, blocks are visited in order; a block hits when it is cached and every
/// earlier block of the request hit too; then it is marked used (inserted if missing, and
/// the cache trimmed to its capacity after each insert).
public enum PrefixReplay {
    /// Which block is evicted when the cache is full.
    public enum Policy: String, Sendable, CaseIterable, Codable {
        /// Plain LRU over blocks: a block may outlive its parent, unreachable.
        case lru
        /// ``KVStore``'s policy: the least recently used block that no cached block extends.
        case leavesFirst = "leaves-first"
    }

    /// Counts of one replay.
    public struct Result: Sendable, Equatable, Codable {
        /// The policy replayed.
        public var policy: Policy
        /// Capacity in blocks; 0 for unbounded.
        public var capacityBlocks: Int
        /// Requests replayed.
        public var requests: Int
        /// Prompt blocks seen.
        public var blocks: Int
        /// Prompt blocks that hit.
        public var hitBlocks: Int
        /// Prompt tokens seen.
        public var tokens: Int
        /// Prompt tokens covered by hit blocks.
        public var hitTokens: Int
        /// Blocks evicted.
        public var evictions: Int

        /// hitBlocks / blocks.
        public var blockHitRate: Double { blocks == 0 ? 0 : Double(hitBlocks) / Double(blocks) }
        /// hitTokens / tokens.
        public var tokenHitRate: Double { tokens == 0 ? 0 : Double(hitTokens) / Double(tokens) }
    }

    /// Replays `requests` through a cache of `capacityBlocks` blocks (0: unbounded).
    /// `perRequestHits`, if given, receives each request's leading hit blocks.
    /// - Complexity: O(blocks · log capacity).
    public static func run(
        _ requests: [TraceRequest], capacityBlocks: Int, blockTokens: Int, policy: Policy,
        perRequestHits: ((Int) -> Void)? = nil
    ) -> Result {
        var r = Result(
            policy: policy, capacityBlocks: capacityBlocks, requests: requests.count, blocks: 0, hitBlocks: 0,
            tokens: 0, hitTokens: 0, evictions: 0)
        var cache = BlockCache(policy: policy, capacity: capacityBlocks)
        for req in requests {
            var intact = true, hits = 0
            var parent: Int? = nil
            for id in req.hashIDs {
                if intact && cache.contains(id) { hits += 1 } else { intact = false }
                r.evictions += cache.use(id, parent: parent)
                parent = id
            }
            r.blocks += req.hashIDs.count
            r.hitBlocks += hits
            r.tokens += req.inputLength
            r.hitTokens += min(hits * blockTokens, req.inputLength)
            perRequestHits?(hits)
        }
        return r
    }
}

/// The block cache of a replay: recency by a clock, leaves tracked for ``PrefixReplay/Policy/leavesFirst``.
struct BlockCache {
    struct Entry {
        var lastUse: Int
        var parent: Int?
        var children: Int
    }

    let policy: PrefixReplay.Policy
    let capacity: Int
    var entries: [Int: Entry] = [:]
    var clock = 0
    /// Candidates for eviction, oldest first; an entry is stale when its block's lastUse moved on
    /// (or, for leaves-first, when the block has children).
    var heap = MinHeap()

    init(policy: PrefixReplay.Policy, capacity: Int) {
        self.policy = policy
        self.capacity = capacity
    }

    func contains(_ id: Int) -> Bool { entries[id] != nil }

    /// Marks `id` used (inserting it under `parent` if missing); returns evictions.
    mutating func use(_ id: Int, parent: Int?) -> Int {
        clock += 1
        if entries[id] != nil {
            entries[id]!.lastUse = clock
            if policy == .lru || entries[id]!.children == 0 { heap.push(clock, id) }
            return 0
        }
        var linkedParent: Int? = nil
        if let parent, entries[parent] != nil {
            entries[parent]!.children += 1
            linkedParent = parent
        }
        entries[id] = Entry(lastUse: clock, parent: linkedParent, children: 0)
        heap.push(clock, id)
        guard capacity > 0 else { return 0 }
        var evicted = 0
        while entries.count > capacity, let (use, victim) = heap.pop() {
            guard let e = entries[victim], e.lastUse == use else { continue }
            if policy == .leavesFirst && e.children > 0 { continue }
            entries[victim] = nil
            evicted += 1
            if let p = e.parent, entries[p] != nil {
                entries[p]!.children -= 1
                if policy == .leavesFirst && entries[p]!.children == 0 { heap.push(entries[p]!.lastUse, p) }
            }
        }
        return evicted
    }
}

/// A binary min-heap of (priority, id).
struct MinHeap {
    var items: [(Int, Int)] = []

    mutating func push(_ priority: Int, _ id: Int) {
        items.append((priority, id))
        var i = items.count - 1
        while i > 0 {
            let p = (i - 1) / 2
            if items[p].0 <= items[i].0 { break }
            items.swapAt(p, i)
            i = p
        }
    }

    mutating func pop() -> (Int, Int)? {
        guard !items.isEmpty else { return nil }
        let top = items[0]
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var i = 0
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < items.count && items[l].0 < items[m].0 { m = l }
                if r < items.count && items[r].0 < items[m].0 { m = r }
                if m == i { break }
                items.swapAt(i, m)
                i = m
            }
        }
        return top
    }
}

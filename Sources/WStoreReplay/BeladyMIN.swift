import WStoreCore
import WeightStore

/// Belady's MIN, the offline oracle: on a miss with the budget full, evict the resident
/// expert whose next use is furthest in the future (or never). No demand-paging policy
/// can have fewer misses on the same access sequence with the same capacity.
public enum BeladyMIN {
    /// The demand hits MIN gets on `trace` with `capacity` experts, per layer.
    public static func run(_ trace: RoutingTrace, capacity: Int) -> ReplayResult {
        let g = trace.header.geometry
        var ids: [Int] = []
        var layers: [Int] = []
        ids.reserveCapacity(trace.accessCount)
        for t in 0 ..< trace.tokenCount {
            for l in 0 ..< g.layers {
                for e in trace.experts(token: t, layer: l) {
                    ids.append(g.id(layer: l, expert: Int(e)))
                    layers.append(l)
                }
            }
        }
        let (hit, evicted) = schedule(ids, capacity: capacity, idCount: g.count)
        var result = ReplayResult(policy: "min", layers: g.layers)
        // Per-layer occupancy, sampled at the end of every token.
        var held = [Int](repeating: 0, count: g.layers), heldSum = [Int](repeating: 0, count: g.layers)
        let perToken = max(1, ids.count / max(1, trace.tokenCount))
        for i in ids.indices {
            result.accesses[layers[i]] += 1
            if hit[i] {
                result.hits[layers[i]] += 1
            } else {
                result.demandLoads += 1
                held[layers[i]] += 1
                if evicted[i] >= 0 { held[g.layer(of: Int(evicted[i]))] -= 1 }
            }
            if (i + 1) % perToken == 0 { for l in held.indices { heldSum[l] += held[l] } }
        }
        let samples = Double(max(1, ids.count / perToken)) * Double(capacity)
        result.residentShare = heldSum.map { Double($0) / samples }
        return result
    }

    /// For each access of `sequence` (ids in `0..<idCount`), whether MIN serves it from
    /// a cache of `capacity` entries.
    /// - Complexity: O(n log capacity).
    public static func hits(_ sequence: [Int], capacity: Int, idCount: Int) -> [Bool] {
        schedule(sequence, capacity: capacity, idCount: idCount).hit
    }

    /// For each access of `sequence`, whether MIN serves it, and the id it evicted then (-1: none).
    static func schedule(_ sequence: [Int], capacity: Int, idCount: Int) -> (hit: [Bool], evicted: [Int32]) {
        precondition(capacity >= 1, "capacity must be at least one")
        let n = sequence.count
        // next[i]: index of the next access to sequence[i], or n + id (distinct "never"s).
        var next = [Int](repeating: 0, count: n)
        var seen = [Int](repeating: -1, count: idCount)
        for i in stride(from: n - 1, through: 0, by: -1) {
            let id = sequence[i]
            next[i] = seen[id] >= 0 ? seen[id] : n + id
            seen[id] = i
        }
        var nextUse = [Int](repeating: -1, count: idCount)  // -1: not resident
        var heap = MaxHeap()
        var size = 0
        var out = [Bool](repeating: false, count: n)
        var evicted = [Int32](repeating: -1, count: n)
        for i in 0 ..< n {
            let id = sequence[i]
            if nextUse[id] >= 0 {
                out[i] = true
            } else {
                if size == capacity {
                    while true {
                        let (key, victim) = heap.pop()!
                        if nextUse[victim] == key {
                            nextUse[victim] = -1
                            evicted[i] = Int32(victim)
                            break
                        }  // else stale
                    }
                    size -= 1
                }
                size += 1
            }
            nextUse[id] = next[i]
            heap.push(next[i], id)
        }
        return (out, evicted)
    }
}

/// A binary max-heap of (key, id) pairs.
private struct MaxHeap {
    private var keys: [Int] = []
    private var ids: [Int] = []

    mutating func push(_ key: Int, _ id: Int) {
        keys.append(key)
        ids.append(id)
        var i = keys.count - 1
        while i > 0 {
            let p = (i - 1) / 2
            guard keys[p] < keys[i] else { break }
            keys.swapAt(p, i)
            ids.swapAt(p, i)
            i = p
        }
    }

    mutating func pop() -> (Int, Int)? {
        guard let top = keys.first else { return nil }
        let topId = ids[0]
        let lastKey = keys.removeLast(), lastId = ids.removeLast()
        if !keys.isEmpty {
            keys[0] = lastKey
            ids[0] = lastId
            var i = 0
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < keys.count && keys[l] > keys[m] { m = l }
                if r < keys.count && keys[r] > keys[m] { m = r }
                if m == i { break }
                keys.swapAt(m, i)
                ids.swapAt(m, i)
                i = m
            }
        }
        return (top, topId)
    }
}

import WeightStore
import WStoreCore
/// Replays a routing trace against a policy without a store: a pure, fast model of a
/// residency manager with a budget of `capacity` equal-sized experts.
///
/// Token by token, layer by layer, every expert the token used is a demand access; with
/// `prefetch`, the prediction for layer `l + 1` is issued after layer `l`'s accesses
/// (the prediction for layer 0, if any, before the token) and loads at once. Nothing is
/// pinned in the model: an engine releases a layer's experts before the next layer's
/// loads can need their room.
public enum ResidencySimulator {
    /// Replays `trace` with `policy` and a budget of `capacity` experts.
    /// - Precondition: `capacity ≥ 1`.
    public static func run(_ trace: RoutingTrace, policy: any ResidencyPolicy, capacity: Int,
                           prefetch: Bool = false) -> ReplayResult {
        precondition(capacity >= 1, "capacity must be at least one expert")
        let g = trace.header.geometry, L = g.layers
        var result = ReplayResult(policy: policy.name, layers: L)
        var resident = [Bool](repeating: false, count: g.count)
        var prefetchedUnused = [Bool](repeating: false, count: g.count)
        var used = 0
        let never: (Int) -> Bool = { _ in false }

        func insert(_ id: Int, prefetched: Bool) {
            if used >= capacity {
                guard let v = policy.victim(for: id, isPinned: never) else {
                    preconditionFailure("\(policy.name) found no victim with nothing pinned")
                }
                precondition(resident[v] && v != id, "\(policy.name) chose a victim that is not resident")
                policy.removed(v)
                resident[v] = false
                used -= 1
                if prefetchedUnused[v] { prefetchedUnused[v] = false; result.wastedPrefetches += 1 }
            }
            resident[id] = true
            used += 1
            policy.inserted(id, prefetched: prefetched)
        }
        func hint(_ experts: ArraySlice<Int32>, layer: Int) {
            for e in experts {
                let id = g.id(layer: layer, expert: Int(e))
                policy.hinted(id)
                if !resident[id] {
                    insert(id, prefetched: true)
                    prefetchedUnused[id] = true
                    result.prefetchLoads += 1
                }
            }
        }

        for t in 0 ..< trace.tokenCount {
            if prefetch, let p = trace.predicted(token: t, layer: 0) { hint(p, layer: 0) }
            for l in 0 ..< L {
                for e in trace.experts(token: t, layer: l) {
                    let id = g.id(layer: l, expert: Int(e))
                    result.accesses[l] += 1
                    if resident[id] {
                        result.hits[l] += 1
                        policy.accessed(id, hit: true)
                        if prefetchedUnused[id] { prefetchedUnused[id] = false; result.prefetchHits += 1 }
                    } else {
                        policy.accessed(id, hit: false)
                        insert(id, prefetched: false)
                        result.demandLoads += 1
                    }
                }
                if prefetch && l + 1 < L, let p = trace.predicted(token: t, layer: l + 1) { hint(p, layer: l + 1) }
            }
        }
        result.wastedPrefetches += prefetchedUnused.lazy.filter { $0 }.count
        return result
    }
}

/// What one replay of a trace measured.
public struct ReplayResult: Sendable, Codable {
    /// The policy's name (`min` for the oracle).
    public var policy: String
    /// Demand accesses per layer.
    public var accesses: [Int]
    /// Demand accesses served from memory, per layer.
    public var hits: [Int]
    /// Loads on demand misses.
    public var demandLoads = 0
    /// Loads started by prefetch hints.
    public var prefetchLoads = 0
    /// Demand hits on an expert a prefetch brought in (first use only).
    public var prefetchHits = 0
    /// Prefetched experts evicted (or left at the end) without a demand use.
    public var wastedPrefetches = 0

    init(policy: String, layers: Int) {
        self.policy = policy
        accesses = Array(repeating: 0, count: layers)
        hits = Array(repeating: 0, count: layers)
    }

    /// All demand accesses.
    public var accessCount: Int { accesses.reduce(0, +) }
    /// The fraction of demand accesses served from memory.
    public var hitRate: Double { Double(hits.reduce(0, +)) / Double(max(1, accessCount)) }
    /// Loads (demand and prefetch) per demand access.
    public var loadsPerAccess: Double { Double(demandLoads + prefetchLoads) / Double(max(1, accessCount)) }
    /// Hit rate of each layer.
    public var perLayerHitRate: [Double] { zip(hits, accesses).map { Double($0) / Double(max(1, $1)) } }
}

extension ReplayResult {
    /// The first `layers` layers of a manager's counters in replay terms; prefetched
    /// experts still resident and unused count as wasted, as the simulator counts them.
    package init(stats: ResidencyStats, policy: String, layers: Int) {
        self.init(policy: policy, layers: layers)
        for l in 0 ..< min(layers, stats.layers.count) {
            let s = stats.layers[l]
            accesses[l] = s.demandHits + s.demandMisses
            hits[l] = s.demandHits
            demandLoads += s.demandLoads
            prefetchLoads += s.prefetchLoads
            prefetchHits += s.prefetchHits
            wastedPrefetches += s.wastedPrefetches
        }
        wastedPrefetches += stats.unusedPrefetchesResident
    }
}

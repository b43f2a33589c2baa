import WStoreCore
import WeightStore

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
    ///
    /// With `cacheAwareRouting` (a relative tolerance) and a trace with scores, each
    /// layer's picks are first re-routed with ``CacheAwareRouting/topK(experts:probabilities:k:tolerance:isResident:)``
    /// against what is resident, and the re-routed picks are the demand accesses.
    ///
    /// With `scores` (the default) and a trace with scores, each layer's candidates and
    /// their probabilities reach ``ResidencyPolicy/scored(_:probabilities:)`` after the
    /// layer's accesses, as an engine reports them with ``ResidencyManager/observe(layer:experts:probabilities:)``.
    public static func run(
        _ trace: RoutingTrace, policy: any ResidencyPolicy, capacity: Int,
        prefetch: Bool = false, cacheAwareRouting: Double? = nil,
        scores: Bool = true
    ) -> ReplayResult {
        precondition(capacity >= 1, "capacity must be at least one expert")
        let g = trace.header.geometry, L = g.layers
        var result = ReplayResult(policy: policy.name, layers: L)
        var resident = [Bool](repeating: false, count: g.count)
        var prefetchedUnused = [Bool](repeating: false, count: g.count)
        var used = 0
        var held = [Int](repeating: 0, count: L), heldSum = [Int](repeating: 0, count: L)
        let never: (Int) -> Bool = { _ in false }

        func insert(_ id: Int, prefetched: Bool) {
            if used >= capacity {
                guard let v = policy.victim(for: id, isPinned: never) else {
                    preconditionFailure("\(policy.name) found no victim with nothing pinned")
                }
                precondition(resident[v] && v != id, "\(policy.name) chose a victim that is not resident")
                policy.removed(v)
                resident[v] = false
                held[g.layer(of: v)] -= 1
                used -= 1
                if prefetchedUnused[v] {
                    prefetchedUnused[v] = false
                    result.wastedPrefetches += 1
                }
            }
            resident[id] = true
            held[g.layer(of: id)] += 1
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
                var picks = Array(trace.experts(token: t, layer: l).lazy.map { Int($0) })
                if let tolerance = cacheAwareRouting, let (c, p) = trace.scores(token: t, layer: l) {
                    let choice = CacheAwareRouting.topK(
                        experts: c.lazy.map { Int($0) }, probabilities: p.lazy.map { Double($0) },
                        k: picks.count, tolerance: tolerance
                    ) { resident[g.id(layer: l, expert: $0)] }
                    picks = choice.experts
                    result.routedPicks += picks.count
                    result.swappedPicks += choice.swapped
                    result.massGivenUp += choice.massGivenUp
                    result.routedGroups += 1
                }
                for e in picks {
                    let id = g.id(layer: l, expert: e)
                    result.accesses[l] += 1
                    if resident[id] {
                        result.hits[l] += 1
                        policy.accessed(id, hit: true)
                        if prefetchedUnused[id] {
                            prefetchedUnused[id] = false
                            result.prefetchHits += 1
                        }
                    } else {
                        policy.accessed(id, hit: false)
                        insert(id, prefetched: false)
                        result.demandLoads += 1
                    }
                }
                if scores, let (c, p) = trace.scores(token: t, layer: l) {
                    policy.scored(c.map { g.id(layer: l, expert: Int($0)) }, probabilities: p.map { Double($0) })
                }
                if prefetch && l + 1 < L, let p = trace.predicted(token: t, layer: l + 1) { hint(p, layer: l + 1) }
            }
            for l in 0 ..< L { heldSum[l] += held[l] }
        }
        result.wastedPrefetches += prefetchedUnused.lazy.filter { $0 }.count
        let samples = Double(max(1, trace.tokenCount)) * Double(capacity)
        result.residentShare = heldSum.map { Double($0) / samples }
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
    /// Per layer, the mean share of the budget its experts held (sampled after every token).
    public var residentShare: [Double]
    /// With cache-aware routing: picks made from scored candidates.
    public var routedPicks = 0
    /// With cache-aware routing: picks swapped for a resident candidate.
    public var swappedPicks = 0
    /// With cache-aware routing: router probability given up, summed over tokens and layers.
    public var massGivenUp = 0.0
    /// With cache-aware routing: token-layers routed from scores.
    public var routedGroups = 0

    init(policy: String, layers: Int) {
        self.policy = policy
        accesses = Array(repeating: 0, count: layers)
        hits = Array(repeating: 0, count: layers)
        residentShare = Array(repeating: 0, count: layers)
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

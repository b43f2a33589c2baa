import Foundation
import WStoreCore

/// `leader`: follows whichever of several rules has lately served the most demand
/// accesses from a cache of the same size (after the "adaptive caching using multiple
/// experts" scheme of Ari et al., and ARC's ghost lists, which score two rules the same way).
///
/// Each rule runs twice. A *shadow* copy replays every access and hint against a
/// resident set of its own, as if it alone managed the budget, and counts its demand
/// hits; a *follower* copy sees what really happens and ranks the real residents. The
/// victim is the follower's of the rule whose shadow has the most hits, counted with a
/// decay whose half-life is ``halfLifeTurnovers`` turnovers of the cache (one turnover:
/// as many demand accesses as the cache holds experts), so a change in the routing's
/// character hands the lead over within a few turnovers. Ties go to the earlier rule.
///
/// Every rule sees the same events, so the real cache is always some rule's cache
/// lately; when one rule is best on a trace, the leader is that rule up to the accesses
/// spent finding out.
///
/// The rules by default, each for a kind of routing the others miss: `forecast`
/// (frequencies over memories weighted by how well they predict, for routing with lasting
/// or topical favourites), `adaptive` (credits consecutive-token reuse, for routing where
/// a token often repeats its predecessor's experts), `lfu`, `lru` and `lru-per-layer` (the
/// baselines, so the leader is never far below them).
///
/// - Complexity: each access and hint costs what every rule's costs, once more for each
///   rule whose state depends on what is resident (lru, lru-per-layer: O(1) each); a
///   miss, one victim choice per rule whose shadow misses too. A rule whose state does
///   not (forecast, adaptive, lfu) learns once and ranks both caches.
public final class LeaderPolicy: ResidencyPolicy {
    public let name: String
    /// The rules followed, in order of preference on a tie.
    public let rules: [ResidencyPolicyKind]
    /// Half-life of the hit counts, in turnovers of the cache.
    public let halfLifeTurnovers: Double
    private let capacity: Int
    @exclusivity(unchecked) private var shadows: [Shadow]
    private let followers: [any ResidencyPolicy]
    @exclusivity(unchecked) private var score: [Double]
    private let decay: Double
    /// Index in ``rules`` of the rule whose victims are taken now.
    @exclusivity(unchecked) public private(set) var leader = 0

    /// A shadow copy: a rule alone over a cache of `capacity` experts. A ranking rule
    /// (one whose state does not depend on what is resident) is not run twice: its
    /// follower ranks the shadow's residents, kept here, as well as the real ones.
    private struct Shadow {
        /// The shadow's own instance of a rule whose state depends on what is resident.
        let policy: (any ResidencyPolicy)?
        /// The follower that ranks this shadow's residents, for a ranking rule.
        let ranker: (any RankingPolicy)?
        var resident: [Bool]
        var members: ResidentSet
        var used = 0
    }

    /// A policy following the best of `rules` over `geometry` and a budget of `capacity` experts.
    /// - Precondition: `rules` is not empty and holds no `leader`; `halfLifeTurnovers` is positive.
    public init(
        geometry: ResidencyGeometry, capacity: Int,
        rules: [ResidencyPolicyKind] = [.forecast, .adaptive, .lfu, .lru, .lruPerLayer],
        halfLifeTurnovers: Double = 32, name: String = "leader"
    ) {
        precondition(!rules.isEmpty && !rules.contains(.leader), "a leader follows other rules")
        precondition(halfLifeTurnovers > 0, "the half-life must be positive")
        self.name = name
        self.rules = rules
        self.halfLifeTurnovers = halfLifeTurnovers
        self.capacity = max(1, capacity)
        let followers = rules.map { $0.make(geometry: geometry, capacity: capacity) }
        self.followers = followers
        shadows = zip(rules, followers).map { rule, follower in
            let ranker = follower as? any RankingPolicy
            return Shadow(
                policy: ranker == nil ? rule.make(geometry: geometry, capacity: capacity) : nil,
                ranker: ranker,
                resident: Array(repeating: false, count: geometry.count),
                members: ResidentSet(count: ranker == nil ? 0 : geometry.count))
        }
        score = Array(repeating: 0, count: rules.count)
        decay = exp2(-1 / (halfLifeTurnovers * Double(max(1, capacity))))
    }

    /// The decayed demand hits of each rule's shadow, in the order of ``rules``.
    public var shadowHits: [Double] { score }

    /// Makes `id` resident in shadow `s`, evicting the rule's victim when it is full.
    private func load(_ s: Int, _ id: Int, prefetched: Bool) {
        let never: (Int) -> Bool = { _ in false }
        if let ranker = shadows[s].ranker {
            if shadows[s].used >= capacity,
                let v = ranker.victim(among: shadows[s].members.members, for: id, isPinned: never)
            {
                shadows[s].members.remove(v)
                shadows[s].resident[v] = false
                shadows[s].used -= 1
            }
            shadows[s].members.insert(id)
        } else if let policy = shadows[s].policy {
            if shadows[s].used >= capacity, let v = policy.victim(for: id, isPinned: never) {
                policy.removed(v)
                shadows[s].resident[v] = false
                shadows[s].used -= 1
            }
            policy.inserted(id, prefetched: prefetched)
        }
        shadows[s].resident[id] = true
        shadows[s].used += 1
    }

    public func accessed(_ id: Int, hit: Bool) {
        // Ranking rules learn once, from the follower; their shadows' victims are then
        // chosen after the access, as a shadow instance of their own would choose them.
        for f in followers { f.accessed(id, hit: hit) }
        var best = leader
        for s in shadows.indices {
            let h = shadows[s].resident[id]
            score[s] = score[s] * decay + (h ? 1 : 0)
            shadows[s].policy?.accessed(id, hit: h)
            if !h { load(s, id, prefetched: false) }
            if score[s] > score[best] || (score[s] == score[best] && s < best) { best = s }
        }
        leader = best
    }

    public func hinted(_ id: Int) {
        for f in followers { f.hinted(id) }
        for s in shadows.indices {
            shadows[s].policy?.hinted(id)
            if !shadows[s].resident[id] { load(s, id, prefetched: true) }
        }
    }

    public func scored(_ ids: [Int], probabilities: [Double]) {
        for f in followers { f.scored(ids, probabilities: probabilities) }
        for s in shadows { s.policy?.scored(ids, probabilities: probabilities) }
    }

    public func inserted(_ id: Int, prefetched: Bool) {
        for f in followers { f.inserted(id, prefetched: prefetched) }
    }

    public func removed(_ id: Int) {
        for f in followers { f.removed(id) }
    }

    /// The mixed-precision rule of the rule followed now: a low-bit expert is upgraded
    /// when the leading rule calls it hot (`forecast`: next use within a couple of tokens;
    /// `lru`: four hits on its low-bit copy; the others: on its next upgrading use).
    public func upgrades(_ id: Int) -> Bool { followers[leader].upgrades(id) }

    public func held(_ id: Int, at precision: ExpertPrecision) {
        for f in followers { f.held(id, at: precision) }
    }

    public func victim(for incoming: Int, isPinned: (Int) -> Bool) -> Int? {
        if let v = followers[leader].victim(for: incoming, isPinned: isPinned) { return v }
        for f in followers.indices where f != leader {
            if let v = followers[f].victim(for: incoming, isPinned: isPinned) { return v }
        }
        return nil
    }
}

import Foundation

/// `adaptive`, wstore's own policy: it evicts the expert whose next use is expected
/// furthest away, as Belady's MIN evicts the one whose next use *is* furthest away,
/// whatever its layer. Expectations of all layers are on one time scale, so slots flow
/// to the layers where one more slot saves the most misses (the per-layer split AdapMoE
/// computes offline from miss curves, here continuously).
///
/// For expert `e` of layer `l`, `p` is its estimated chance of being used by the
/// layer's next token, the sum of
/// - its *rate*: its recent share of the layer's picks times `topK` (a recency-weighted
///   frequency, LRFU after Lee et al. 2001), the mean of one estimate per half-life in
///   ``halfLives`` (by default 64 and 512 tokens of the layer: a short one that follows a
///   request's own taste, a long one that keeps the layer's lasting popularity; their
///   mean beat either alone on every replay), kept for non-resident experts too, so a
///   popular expert comes back with its history;
/// - its *reuse* bonus, when the layer's previous token used it: `ρ_l`, the layer's
///   measured probability that an expert of one token is used again by the next
///   (consecutive tokens reuse experts, more so in deep layers). Experts of the token
///   under way count as certain. (Also crediting older uses, as `ρ_l^age`, measured
///   worse: reuse beyond the previous token is already in the rate.)
/// - its *hint* bonus: when a prefetch hint names it for the layer's next token, the
///   layer's measured hint accuracy.
///
/// Its expected wait is then the way to layer `l` (a fraction of a token) plus
/// `(1 − p) / p` tokens. Recency and frequency are thus mixed per layer by what the
/// layer's own routing shows, as ARC mixes them by what its ghost lists show.
public final class AdaptivePolicy: RankingPolicy {
    public let name = "adaptive"
    let geometry: ResidencyGeometry
    /// Tokens over which each of the rate estimates halves; the rate is their mean.
    public let halfLives: [Double]
    /// Expected tokens to the next use within which a low-bit expert is upgraded.
    public var upgradeWithin = 2.0
    /// The shortest of ``halfLives``.
    public var halfLifeTokens: Double { halfLives.min() ?? 0 }

    private let k: Int
    private let lambda: [Double]  // per layer access, one per half-life
    private let rateScale: [Double]
    @exclusivity(unchecked) private var value: [[Double]]  // [half-life][id]: decayed pick counts
    @exclusivity(unchecked) private var stamp: [Double]
    @exclusivity(unchecked) private var lastToken: [Int]
    @exclusivity(unchecked) private var layerAccesses: [Int]
    @exclusivity(unchecked) private var reuse: [Double]
    @exclusivity(unchecked) private var hints: HintPrecision
    @exclusivity(unchecked) private var resident: ResidentSet
    @exclusivity(unchecked) private var currentLayer = 0

    /// An adaptive policy for `geometry` (the budget is implicit in what is resident)
    /// whose rate is the mean of estimates halving every `halfLives` tokens.
    /// - Precondition: `halfLives` is not empty and every half-life is positive.
    public init(geometry: ResidencyGeometry, capacity: Int, halfLives: [Double] = [64, 512]) {
        precondition(!halfLives.isEmpty && halfLives.allSatisfy { $0 > 0 }, "half-lives must be positive")
        self.geometry = geometry
        self.halfLives = halfLives
        k = max(1, geometry.topK)
        lambda = halfLives.map { [k] in 1 / ($0 * Double(k)) }
        rateScale = lambda.map { [k] in Double(k) * (1 - exp2(-$0)) }
        let n = geometry.count
        value = halfLives.map { _ in Array(repeating: 0, count: n) }
        stamp = Array(repeating: 0, count: n)
        lastToken = Array(repeating: Int.min / 2, count: n)
        layerAccesses = Array(repeating: 0, count: geometry.layers)
        reuse = Array(repeating: 0.5, count: geometry.layers)
        hints = HintPrecision(geometry: geometry)
        resident = ResidentSet(count: n)
    }

    /// An adaptive policy with a single rate estimate halving every `halfLifeTokens` tokens.
    public convenience init(geometry: ResidencyGeometry, capacity: Int, halfLifeTokens: Double) {
        self.init(geometry: geometry, capacity: capacity, halfLives: [halfLifeTokens])
    }

    /// The token of layer `l` whose accesses come next (or are under way).
    @inline(__always) private func token(_ l: Int) -> Int { layerAccesses[l] / k }

    public func accessed(_ id: Int, hit: Bool) {
        let l = id / geometry.experts
        currentLayer = l
        let t = token(l)
        // Learn the layer's reuse: a running mean over its first picks, then a moving
        // average over ~512.
        let a = 1.0 / Double(min(layerAccesses[l] + 1, 512))
        reuse[l] += a * ((lastToken[id] == t - 1 ? 1 : 0) - reuse[l])
        hints.accessed(id, layer: l, token: t)
        let now = Double(layerAccesses[l])
        for h in lambda.indices {
            value[h][id] = value[h][id] * exp2(-lambda[h] * (now - stamp[id])) + 1
        }
        stamp[id] = now
        lastToken[id] = t
        layerAccesses[l] += 1
    }

    public func hinted(_ id: Int) {
        let l = id / geometry.experts
        hints.hinted(id, layer: l, token: token(l))
    }

    public func inserted(_ id: Int, prefetched: Bool) { resident.insert(id) }

    public func removed(_ id: Int) { resident.remove(id) }

    /// The estimated chance that `id` is used by its layer's next token.
    public func score(_ id: Int) -> Double {
        let l = id / geometry.experts
        let t = token(l)
        let elapsed = Double(layerAccesses[l]) - stamp[id]
        var rate = 0.0
        for h in lambda.indices { rate += rateScale[h] * value[h][id] * exp2(-lambda[h] * elapsed) }
        rate /= Double(lambda.count)
        let age = t - lastToken[id]
        var s = rate
        if age <= 0 {
            s += 1
        } else if age == 1 {
            s += reuse[l]
        }
        if hints.isHinted(id, token: t) { s += hints.precision(layer: l) }
        return s
    }

    /// Expected tokens until `id`'s next use: the way to its layer's next token, then
    /// geometric with the per-token chance of use.
    public func expectedWait(_ id: Int) -> Double {
        let L = geometry.layers
        let p = min(1, max(score(id), 1e-9))
        let d = Double((id / geometry.experts - currentLayer + L) % L) / Double(L)
        return d + (1 - p) / p
    }

    /// The mixed-precision rule (as `forecast`'s): an expert held low-bit is upgraded to
    /// exact when its next use is expected within ``upgradeWithin`` tokens; colder ones
    /// stay low-bit, so more of them fit the budget.
    public func upgrades(_ id: Int) -> Bool { expectedWait(id) <= upgradeWithin }

    /// The furthest expected next use leaves (as in MIN).
    public func victim(for incoming: Int, isPinned: (Int) -> Bool) -> Int? {
        victim(among: resident.members, for: incoming, isPinned: isPinned)
    }

    func victim(among members: [Int], for incoming: Int, isPinned: (Int) -> Bool) -> Int? {
        var best = -1, bestScore = Double.infinity
        for id in members where id != incoming && !isPinned(id) {
            let s = -expectedWait(id)
            if s < bestScore {
                best = id
                bestScore = s
            }
        }
        return best >= 0 ? best : nil
    }
}

import Foundation

/// `forecast`: evicts the resident expert whose next use is expected furthest away, as
/// Belady's MIN evicts the one whose next use *is* furthest away, with every estimate
/// learnt online from the layer's own routing:
///
/// - **How often** (per layer, per token): a bank of recency-weighted frequencies (LRFU
///   estimates) whose memories span 1 to 256 tokens, mixed with weights learnt from how
///   well the mixture has predicted the layer's picks (exponentiated gradient on its log
///   loss, Helmbold et al. 1998: a bank that would have made the mixture's forecast of a
///   pick likelier gains weight; none ever drops below ``weightFloor``, so a change in
///   the routing can bring it back). A layer whose experts follow the request's topic
///   leans on the short memories, one with lasting favourites on the long ones, and a
///   layer in between on a blend of them: no half-life is fitted to a trace.
/// - **Router probabilities** (when the engine reports them, ``scored(_:probabilities:)``):
///   a second bank of the same memories counts *soft* picks, each candidate's share of
///   the reported probability mass scaled to the token's `topK` picks, so a runner-up the
///   router nearly chose counts as part of a pick. The mixture weighs the soft bank
///   against the hard one as it weighs the memories: where the router's runners-up
///   foretell later picks the soft bank gains weight, elsewhere it fades to the floor.
/// - **Reuse beyond frequency**: consecutive tokens may share experts more often than
///   their frequencies explain (or not at all: on recorded routing reuse sits at chance
///   level). Each layer measures how many of a token's experts the next token reuses
///   *beyond* what the estimate above predicted for them, and credits only that excess
///   to the last token's experts.
/// - **The next visit** (when a prefetch hint names the expert for its layer's next
///   token): at least the layer's measured hint precision.
/// - **When**: the way to the layer's next token (layers run in order), then a geometric
///   wait at the estimated chance per token.
///
/// Expectations of all layers are on one time scale, so slots flow to the layers where
/// one more slot saves the most misses, as AdapMoE's per-layer budgets do offline.
public final class ForecastPolicy: RankingPolicy {
    public let name: String
    let geometry: ResidencyGeometry
    /// The memories of the frequency estimates, in tokens of the layer.
    public let halfLives: [Double]
    /// Tokens: a low-bit expert whose next use is expected sooner is upgraded to exact.
    public var upgradeWithin = 2.0
    /// The step of the mixture weights' exponentiated-gradient update.
    public let learningRate: Double
    /// The least weight a memory keeps in a layer's mixture before renormalising.
    public static let weightFloor = 1e-4
    private let k: Int
    private let decay: [Double]  // per token, one per half-life
    private let powers: [Double]  // [h * powerCount + n]: pow(decay[h], n), the same values pow gives
    private static let powerCount = 1024
    @exclusivity(unchecked) private var value: [[Double]]  // [h][id], as of stamp[id], including that token
    @exclusivity(unchecked) private var stamp: [Int]  // the layer's token of the last use, or -1
    @exclusivity(unchecked) private var soft: [[Double]]  // [h][id]: soft picks, as of softStamp[id]
    @exclusivity(unchecked) private var softStamp: [Int]  // the layer's token of the last scores naming id, or -1
    /// Whether router probabilities have been reported: the soft bank joins the mixture.
    @exclusivity(unchecked) public private(set) var usesScores = false
    @exclusivity(unchecked) private var layerAccesses: [Int]
    @exclusivity(unchecked) private var weight: [[Double]]  // [layer][bank]: hard memories, then soft ones
    @exclusivity(unchecked) private var likelihood: [Double]  // scratch: each bank's chance of the pick
    @exclusivity(unchecked) private var hints: HintPrecision
    @exclusivity(unchecked) private var resident: ResidentSet
    @exclusivity(unchecked) private var excess: [Double]
    @exclusivity(unchecked) private var previous: [[Int]]
    @exclusivity(unchecked) private var current: [[Int]]
    @exclusivity(unchecked) private var expectedReuse: [Double]
    @exclusivity(unchecked) private var reusedNow: [Int]
    @exclusivity(unchecked) private var currentLayer = 0

    /// A forecast policy for `geometry` (the budget is implicit in what is resident) mixing
    /// frequency estimates whose weight halves every `halfLives` tokens.
    /// `learningRate` is the step of the mixture weights (in 0.05...0.2 the replays of
    /// ``ResidencyPolicyKind/default`` agree to a tenth of a point; above 0.5 the weights
    /// swing on single picks).
    /// - Precondition: `halfLives` is not empty and every half-life is positive;
    ///   `learningRate` is positive.
    public init(
        geometry: ResidencyGeometry, capacity: Int, halfLives: [Double] = [1, 4, 16, 64, 256],
        learningRate: Double = 0.1, name: String = "forecast"
    ) {
        precondition(!halfLives.isEmpty && halfLives.allSatisfy { $0 > 0 }, "half-lives must be positive")
        precondition(learningRate > 0, "the learning rate must be positive")
        self.name = name
        self.learningRate = learningRate
        self.geometry = geometry
        self.halfLives = halfLives
        k = max(1, geometry.topK)
        decay = halfLives.map { exp2(-1 / $0) }
        powers = decay.flatMap { d in (0 ..< Self.powerCount).map { pow(d, Double($0)) } }
        let n = geometry.count
        value = halfLives.map { _ in Array(repeating: 0, count: n) }
        stamp = Array(repeating: -1, count: n)
        soft = halfLives.map { _ in Array(repeating: 0, count: n) }
        softStamp = Array(repeating: -1, count: n)
        layerAccesses = Array(repeating: 0, count: geometry.layers)
        weight = Array(
            repeating: Array(repeating: 1 / Double(halfLives.count), count: halfLives.count), count: geometry.layers)
        likelihood = Array(repeating: 0, count: 2 * halfLives.count)
        hints = HintPrecision(geometry: geometry)
        resident = ResidentSet(count: n)
        excess = Array(repeating: 0, count: geometry.layers)
        previous = Array(repeating: [], count: geometry.layers)
        current = Array(repeating: [], count: geometry.layers)
        expectedReuse = Array(repeating: 0, count: geometry.layers)
        reusedNow = Array(repeating: 0, count: geometry.layers)
    }

    /// The token of layer `l` whose accesses come next (or are under way).
    @inline(__always) private func token(_ l: Int) -> Int { layerAccesses[l] / k }

    /// `pow(decay[h], n)`, looked up for the usual small `n`.
    @inline(__always) private func power(_ h: Int, _ n: Int) -> Double {
        n >= 0 && n < Self.powerCount ? powers[h &* Self.powerCount &+ n] : pow(decay[h], Double(n))
    }

    /// Estimate of bank `b` (a hard memory below `halfLives.count`, then the soft ones) of
    /// the chance that `id` is used by its layer's token `t` (> its last use).
    @inline(__always) private func estimate(_ b: Int, _ id: Int, at t: Int) -> Double {
        let H = halfLives.count
        if b < H {
            guard stamp[id] >= 0 else { return 0 }
            return (1 - decay[b]) * value[b][id] * power(b, t - 1 - stamp[id])
        }
        let h = b - H
        guard softStamp[id] >= 0 else { return 0 }
        return (1 - decay[h]) * soft[h][id] * power(h, max(0, t - 1 - softStamp[id]))
    }

    /// The mixed chance that `id` is used by its layer's token `t` (> its last use).
    public func chance(_ id: Int, at t: Int) -> Double {
        let w = weight[geometry.layer(of: id)]
        var p = 0.0
        for b in w.indices { p += w[b] * estimate(b, id, at: t) }
        return p
    }

    /// The mixture weights of layer `layer`: one per half-life, then (once router
    /// probabilities were reported) one per half-life of the soft bank.
    public func weights(layer: Int) -> [Double] { weight[layer] }

    /// Counts the router's candidates for the token of their layer whose accesses came
    /// last, each as `topK × p / Σp` of a pick.
    public func scored(_ ids: [Int], probabilities: [Double]) {
        guard let first = ids.first, ids.count == probabilities.count else { return }
        let total = probabilities.reduce(0) { $0 + max(0, $1) }
        guard total > 0, total.isFinite else { return }
        if !usesScores {
            usesScores = true
            for l in weight.indices {
                weight[l] += Array(repeating: Self.weightFloor, count: halfLives.count)
                normalise(layer: l)
            }
        }
        let t = max(0, (layerAccesses[geometry.layer(of: first)] - 1) / k)
        let scale = Double(k) / total
        for (id, p) in zip(ids, probabilities) {
            for h in halfLives.indices {
                let old = softStamp[id] >= 0 ? soft[h][id] * power(h, max(0, t - softStamp[id])) : 0
                soft[h][id] = old + scale * max(0, p)
            }
            softStamp[id] = max(softStamp[id], t)
        }
    }

    private func normalise(layer l: Int) {
        let sum = weight[l].reduce(0, +)
        for b in weight[l].indices { weight[l][b] /= sum }
    }

    public func accessed(_ id: Int, hit: Bool) {
        let l = geometry.layer(of: id)
        currentLayer = l
        let t = token(l)
        hints.accessed(id, layer: l, token: t)
        if layerAccesses[l] % k == 0 {
            // A new token of layer l: how many of the last token's experts the token before
            // it reused, beside what the frequencies expected.
            if t >= 2 {
                let b = 1.0 / min(Double(t - 1), 512)
                excess[l] += b * ((Double(reusedNow[l]) - expectedReuse[l]) / Double(k) - excess[l])
            }
            swap(&previous[l], &current[l])
            current[l].removeAll(keepingCapacity: true)
            expectedReuse[l] = previous[l].reduce(0) { $0 + chance($1, at: t) }
            reusedNow[l] = 0
        }
        if stamp[id] == t - 1 { reusedNow[l] += 1 }
        current[l].append(id)
        // Each bank's chance of this pick (as a share of the token's k picks, mixed with
        // 1% of the uniform so that no estimate is ever certain a pick cannot happen); the
        // mixture's log loss has gradient -q_b / Σ w q in weight b.
        let E = Double(geometry.experts)
        let B = weight[l].count
        var mixed = 0.0
        for b in 0 ..< B {
            likelihood[b] = 0.99 * estimate(b, id, at: t) / Double(k) + 0.01 / E
            mixed += weight[l][b] * likelihood[b]
        }
        var sum = 0.0
        for b in 0 ..< B {
            let w = max(weight[l][b], Self.weightFloor) * exp(learningRate * likelihood[b] / mixed)
            weight[l][b] = w
            sum += w
        }
        for b in 0 ..< B { weight[l][b] /= sum }
        // Count the use.
        for h in halfLives.indices {
            let old = stamp[id] >= 0 ? value[h][id] * power(h, t - stamp[id]) : 0
            value[h][id] = old + 1
        }
        stamp[id] = t
        layerAccesses[l] += 1
    }

    public func hinted(_ id: Int) {
        let l = geometry.layer(of: id)
        hints.hinted(id, layer: l, token: token(l))
    }

    public func inserted(_ id: Int, prefetched: Bool) { resident.insert(id) }
    public func removed(_ id: Int) { resident.remove(id) }

    /// Expected tokens until `id`'s next demand use.
    public func expectedWait(_ id: Int) -> Double {
        let L = geometry.layers
        let l = geometry.layer(of: id)
        var t = token(l)
        if stamp[id] >= t { t += 1 }  // used by the token under way: next token
        let here = (layerAccesses[currentLayer] - 1) / k * L + currentLayer
        let d = Double(t * L + l - here) / Double(L)
        var p = chance(id, at: t)
        if stamp[id] == t - 1 { p += max(0, excess[l]) }
        p = min(1, max(p, 1e-6))
        var first = p
        if hints.isHinted(id, token: t) { first = max(p, hints.precision(layer: l)) }
        return d + (1 - first) / p
    }

    /// The mixed-precision rule: an expert held low-bit is upgraded to exact when its
    /// next use is expected within ``upgradeWithin`` tokens; colder ones stay low-bit.
    public func upgrades(_ id: Int) -> Bool { expectedWait(id) <= upgradeWithin }

    public func victim(for incoming: Int, isPinned: (Int) -> Bool) -> Int? {
        victim(among: resident.members, for: incoming, isPinned: isPinned)
    }

    func victim(among members: [Int], for incoming: Int, isPinned: (Int) -> Bool) -> Int? {
        var best = -1, bestWait = -Double.infinity
        for id in members where id != incoming && !isPinned(id) {
            let w = expectedWait(id)
            if w > bestWait {
                best = id
                bestWait = w
            }
        }
        return best >= 0 ? best : nil
    }
}

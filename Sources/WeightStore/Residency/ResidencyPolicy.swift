import WStoreCore

/// The shape of the expert space a residency policy manages: `layers × experts`, each
/// token routed to `topK` experts per layer. An expert's id is `layer * experts + expert`.
public struct ResidencyGeometry: Sendable, Hashable {
    /// MoE layers.
    public var layers: Int
    /// Routed experts per layer.
    public var experts: Int
    /// Experts each token uses per layer.
    public var topK: Int

    /// A geometry of `layers × experts`, top-`topK`.
    public init(layers: Int, experts: Int, topK: Int) {
        self.layers = layers
        self.experts = experts
        self.topK = topK
    }

    /// Number of distinct experts, `layers * experts`.
    public var count: Int { layers * experts }
    /// The id of expert `expert` of layer `layer`.
    @inline(__always) public func id(layer: Int, expert: Int) -> Int { layer * experts + expert }
    /// The layer of expert id `id`.
    @inline(__always) public func layer(of id: Int) -> Int { id / experts }
}

/// Decides which resident expert leaves when room is needed.
///
/// One protocol serves both the real ``ResidencyManager`` and the pure
/// ``ResidencySimulator`` the bench replays traces with, so a policy measured in the
/// simulator is the policy the manager runs. Every call comes from one thread at a
/// time (the manager calls it under its lock); ids are ``ResidencyGeometry`` ids. No
/// call overlaps another, so the shipped policies mark their mutable state
/// `@exclusivity(unchecked)`: the runtime's exclusivity checks found nothing to catch
/// and took more of an acquire's hit path than some policies' own work.
///
/// The event order for one demand access is `accessed` and, on a miss, `inserted`
/// (after as many `victim`/`removed` pairs as room needs). A prefetch is `hinted`,
/// then `inserted(prefetched: true)` when it loads.
public protocol ResidencyPolicy: AnyObject {
    /// The policy's name as the CLI spells it.
    var name: String { get }
    /// A demand access to `id`; `hit` tells whether it was resident.
    func accessed(_ id: Int, hit: Bool)
    /// A prefetch hint for `id` (resident or not): it will probably be needed soon.
    func hinted(_ id: Int)
    /// `id` became resident (its bytes now count against the budget).
    func inserted(_ id: Int, prefetched: Bool)
    /// `id` stopped being resident.
    func removed(_ id: Int)
    /// The resident expert to evict to make room for `incoming`, skipping those for
    /// which `isPinned` is true; `nil` when every resident expert is pinned.
    func victim(for incoming: Int, isPinned: (Int) -> Bool) -> Int?
    /// Whether `id`, held only as a low-bit variant and just used by an acquire that
    /// allows a background upgrade, is hot enough to be worth its exact bytes: the
    /// mixed-precision rule (see ``ResidencyManager`` "Precision"). Called after
    /// `accessed(id, hit:)`; a `false` keeps the expert low-bit, so cold experts take a
    /// fraction of the budget and more of them fit (Fate's cache-capacity use).
    func upgrades(_ id: Int) -> Bool
    /// `id` is now held at `precision` (its most precise resident copy): after
    /// `inserted`, and again when an upgrade lands.
    func held(_ id: Int, at precision: ExpertPrecision)
    /// The router's candidates for one token of one layer, after that layer's demand
    /// accesses for the token: `ids` (expert ids of one layer) with their router
    /// probabilities `probabilities`, highest first, the picked ones among them.
    /// Evidence of how often each candidate is wanted beyond the picks themselves.
    func scored(_ ids: [Int], probabilities: [Double])
}

extension ResidencyPolicy {
    /// By default every low-bit expert used again under an upgrading request is upgraded
    /// (HOBBIT's rule).
    public func upgrades(_ id: Int) -> Bool { true }
    /// By default a policy ignores precision.
    public func held(_ id: Int, at precision: ExpertPrecision) {}
    /// By default a policy ignores router probabilities.
    public func scored(_ ids: [Int], probabilities: [Double]) {}
}

/// The policies wstore ships, by CLI name.
public enum ResidencyPolicyKind: String, Sendable, CaseIterable, CustomStringConvertible {
    /// One least-recently-used list over every layer.
    case lru
    /// Equal slots per layer, LRU inside each (as mixtral-offloading does).
    case lruPerLayer = "lru-per-layer"
    /// Fate's split: the first layers fully resident, the rest of the budget even over
    /// the deeper layers, LRU inside each.
    case shallow
    /// Least frequently used, counts halved periodically (aging).
    case lfu
    /// wstore's own: evicts the expert whose next use is expected furthest away, from
    /// measured frequency, reuse and hint accuracy per layer (see ``AdaptivePolicy``).
    case adaptive
    /// Adaptive Replacement Cache (Megiddo and Modha): recency and frequency lists sized
    /// by ghost hits (see ``ARCPolicy``).
    case arc
    /// Segmented LRU: probation, then a protected segment on the second use.
    case slru
    /// Least Recently/Frequently Used (Lee et al.): decayed use counts.
    case lrfu
    /// Use counts over each layer's last 80 tokens.
    case window
    /// After SpecMD's Least-Stale: staleness counted in visits of the expert's own layer.
    case leastStale = "least-stale"
    /// Expected time to next use from an online-weighted mixture of frequency memories,
    /// hint precision and the layer order (see ``ForecastPolicy``).
    case forecast
    /// Follows whichever of forecast, adaptive, lfu, lru and lru-per-layer has lately had
    /// the most hits in a shadow cache of the same size (see ``LeaderPolicy``).
    case leader

    /// The policy a manager uses when none is named: `leader`, over forecast, adaptive,
    /// lfu, lru and lru-per-layer. No single rule wins everywhere: in `wstore bench cache` replays
    /// (the two recorded traces in ../shared/data/routing, synthetic ones of several
    /// shapes and seeds; 25%, 50%, 75% residency; with and without prefetch hints)
    /// `forecast` led on the recorded traces and trailed LRU on a synthetic 8-expert one at
    /// 25%, while `leader` was at or above the best of lru, lru-per-layer and lfu in every
    /// replay, with fewer demand misses at fewer loads per access when given the same
    /// hints; told the router's probabilities (``ResidencyManager/observe(layer:experts:probabilities:)``)
    /// it closed 43% and 41% of the LRU→MIN gap at 50% on the two recorded traces, 42% and
    /// 39% without them.
    public static let `default`: ResidencyPolicyKind = .leader

    public var description: String { rawValue }

    /// A fresh policy of this kind for `geometry` and a budget of `capacity` experts.
    public func make(geometry: ResidencyGeometry, capacity: Int) -> any ResidencyPolicy {
        switch self {
        case .lru: LRUPolicy(geometry: geometry)
        case .lruPerLayer: LRUPerLayerPolicy(geometry: geometry, capacity: capacity)
        case .shallow: ShallowPolicy(geometry: geometry, capacity: capacity)
        case .lfu: LFUPolicy(geometry: geometry, capacity: capacity)
        case .adaptive: AdaptivePolicy(geometry: geometry, capacity: capacity)
        case .arc: ARCPolicy(geometry: geometry, capacity: capacity)
        case .slru: SLRUPolicy(geometry: geometry, capacity: capacity)
        case .lrfu: LRFUPolicy(geometry: geometry, capacity: capacity)
        case .window: WindowedFrequencyPolicy(geometry: geometry, capacity: capacity)
        case .leastStale: LeastStalePolicy(geometry: geometry, capacity: capacity)
        case .forecast: ForecastPolicy(geometry: geometry, capacity: capacity)
        case .leader: LeaderPolicy(geometry: geometry, capacity: capacity)
        }
    }
}

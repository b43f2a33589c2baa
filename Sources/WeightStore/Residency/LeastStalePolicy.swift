/// `least-stale`, after SpecMD's Least-Stale (arXiv 2602.03921), as wstore reads it:
/// accesses sweep the layers in order every token, so global recency (LRU) ranks an
/// expert of the layer about to run as older than one of the layer that just ran, though
/// it is needed first. Staleness is instead counted in visits of the expert's own layer:
/// how many of its layer's tokens have passed since it was used. The stalest leaves;
/// among equals, the one whose layer runs furthest ahead, then the least used.
public final class LeastStalePolicy: ResidencyPolicy {
    public let name = "least-stale"
    private let geometry: ResidencyGeometry
    private let k: Int
    private var layerAccesses: [Int]
    private var lastToken: [Int]
    private var uses: [Int]
    private var currentLayer = 0
    private var resident: ResidentSet

    /// Least-Stale over `geometry`.
    public init(geometry: ResidencyGeometry, capacity: Int) {
        self.geometry = geometry
        k = max(1, geometry.topK)
        layerAccesses = Array(repeating: 0, count: geometry.layers)
        lastToken = Array(repeating: -1, count: geometry.count)
        uses = Array(repeating: 0, count: geometry.count)
        resident = ResidentSet(count: geometry.count)
    }

    /// Tokens of `id`'s layer since it was used (0: by the token under way).
    public func staleness(_ id: Int) -> Int {
        let l = geometry.layer(of: id)
        return layerAccesses[l] / k - lastToken[id]
    }

    public func accessed(_ id: Int, hit: Bool) {
        let l = geometry.layer(of: id)
        currentLayer = l
        lastToken[id] = layerAccesses[l] / k
        layerAccesses[l] += 1
        uses[id] += 1
    }

    public func hinted(_ id: Int) {}
    public func inserted(_ id: Int, prefetched: Bool) { resident.insert(id) }
    public func removed(_ id: Int) { resident.remove(id) }

    public func victim(for incoming: Int, isPinned: (Int) -> Bool) -> Int? {
        let L = geometry.layers
        var best = -1, bestKey = (Int.min, Int.min, Int.min)
        for id in resident.members where id != incoming && !isPinned(id) {
            // Layers ahead of the current one run first; the current layer runs last again.
            let ahead = (geometry.layer(of: id) - currentLayer + L - 1) % L
            let key = (staleness(id), ahead, -uses[id])
            if best < 0 || key > bestKey {
                best = id
                bestKey = key
            }
        }
        return best >= 0 ? best : nil
    }
}

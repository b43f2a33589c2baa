/// LRU inside each layer with a fixed number of slots per layer: the shared machinery
/// of ``LRUPerLayerPolicy`` and ``ShallowPolicy``, which differ only in their quotas.
///
/// A layer at its quota replaces within itself; a layer under it takes the slot of the
/// layer most over its own quota (which exists whenever the budget is full).
public class QuotaLRUPolicy: ResidencyPolicy {
    public let name: String
    /// Slots per layer; they add up to the capacity.
    public let quotas: [Int]
    let geometry: ResidencyGeometry
    @exclusivity(unchecked) var lists: IntrusiveLists

    init(name: String, geometry: ResidencyGeometry, quotas: [Int]) {
        self.name = name
        self.geometry = geometry
        self.quotas = quotas
        lists = IntrusiveLists(ids: geometry.count, lists: geometry.layers)
    }

    public func accessed(_ id: Int, hit: Bool) { if hit { lists.moveToFront(id) } }
    public func hinted(_ id: Int) {}
    public func inserted(_ id: Int, prefetched: Bool) { lists.pushFront(id, list: geometry.layer(of: id)) }
    public func removed(_ id: Int) { lists.remove(id) }

    public func victim(for incoming: Int, isPinned: (Int) -> Bool) -> Int? {
        quotaVictim(layer: geometry.layer(of: incoming), quotas: quotas, counts: lists.counts) { l in
            lists.leastRecent(l, excluding: incoming, isPinned: isPinned)
        }
    }
}

/// The victim under per-layer quotas: within `layer` when it is at its quota, else from
/// the layer most over its quota; then from any layer, most over quota first.
/// `pick(l)` returns layer `l`'s candidate or -1.
func quotaVictim(layer: Int, quotas: [Int], counts: [Int], pick: (Int) -> Int) -> Int? {
    if counts[layer] >= quotas[layer] {
        let v = pick(layer)
        if v >= 0 { return v }
    }
    let order = counts.indices.filter { $0 != layer && counts[$0] > 0 }
        .sorted { counts[$0] - quotas[$0] > counts[$1] - quotas[$1] }
    for l in order {
        let v = pick(l)
        if v >= 0 { return v }
    }
    let v = pick(layer)
    return v >= 0 ? v : nil
}

/// Splits `total` slots evenly over `layers`, the first layers taking the remainder.
func evenSplit(_ total: Int, over layers: Int, cap: Int) -> [Int] {
    guard layers > 0 else { return [] }
    let base = total / layers, extra = total % layers
    return (0 ..< layers).map { min(cap, base + ($0 < extra ? 1 : 0)) }
}

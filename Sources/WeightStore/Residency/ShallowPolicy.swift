/// `shallow`, after Fate (arXiv 2502.12224): cross-layer prediction is weakest in the
/// first layers, so they stay fully resident (layers 0–3 when the budget allows), and
/// the rest of the budget is split evenly over the deeper layers, LRU inside each.
///
/// The number of fully resident layers shrinks until every deeper layer keeps at least
/// `topK` slots.
public final class ShallowPolicy: QuotaLRUPolicy {
    /// Layers kept fully resident.
    public let residentLayers: Int

    /// Fate's split of `capacity` experts.
    public init(geometry: ResidencyGeometry, capacity: Int) {
        let (shallow, quotas) = ShallowPolicy.split(geometry: geometry, capacity: capacity)
        residentLayers = shallow
        super.init(name: "shallow", geometry: geometry, quotas: quotas)
    }

    static func split(geometry g: ResidencyGeometry, capacity: Int) -> (Int, [Int]) {
        if capacity >= g.count { return (g.layers, Array(repeating: g.experts, count: g.layers)) }
        var shallow = min(4, g.layers)
        while shallow > 0 && capacity - shallow * g.experts < (g.layers - shallow) * min(g.topK, g.experts) {
            shallow -= 1
        }
        let deep = evenSplit(capacity - shallow * g.experts, over: g.layers - shallow, cap: g.experts)
        return (shallow, Array(repeating: g.experts, count: shallow) + deep)
    }
}

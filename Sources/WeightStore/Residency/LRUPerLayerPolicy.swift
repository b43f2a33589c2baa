/// `lru-per-layer`: the budget split into equal slots per layer, LRU inside each, as
/// mixtral-offloading does.
public final class LRUPerLayerPolicy: QuotaLRUPolicy {
    /// Equal slots per layer out of `capacity` experts.
    public init(geometry: ResidencyGeometry, capacity: Int) {
        super.init(
            name: "lru-per-layer", geometry: geometry,
            quotas: evenSplit(capacity, over: geometry.layers, cap: geometry.experts))
    }
}

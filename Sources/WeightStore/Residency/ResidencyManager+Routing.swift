extension ResidencyManager {
    /// 64-bit words in one layer's residency mask, `⌈experts / 64⌉`.
    public var residencyMaskWords: Int { mask.wordsPerLayer }

    /// Layer `layer`'s residency mask: bit `e % 64` of word `e / 64` is set when expert `e`
    /// is resident. Read lock-free, without waiting on loads or evictions; a snapshot that
    /// may be stale by the time it is used (``acquire(layer:expert:)`` still decides).
    /// - Precondition: `0 ≤ layer < geometry.layers`.
    public func residencyMask(layer: Int) -> [UInt64] {
        precondition(layer >= 0 && layer < geometry.layers, "layer \(layer) outside 0..<\(geometry.layers)")
        return (0 ..< mask.wordsPerLayer).map { mask.load(layer: layer, word: $0) }
    }

    /// Copies layer `layer`'s residency mask into `words` (at most ``residencyMaskWords``
    /// words) without allocating, and returns how many words it wrote.
    /// - Precondition: `0 ≤ layer < geometry.layers`.
    public func residencyMask(layer: Int, into words: UnsafeMutableBufferPointer<UInt64>) -> Int {
        precondition(layer >= 0 && layer < geometry.layers, "layer \(layer) outside 0..<\(geometry.layers)")
        let n = min(words.count, mask.wordsPerLayer)
        for i in 0 ..< n { words[i] = mask.load(layer: layer, word: i) }
        return n
    }

    /// Whether expert `expert` of layer `layer` is resident, from the mask (lock-free).
    public func maskSaysResident(layer: Int, expert: Int) -> Bool {
        guard layer >= 0, layer < geometry.layers, expert >= 0, expert < geometry.experts else { return false }
        return mask.load(layer: layer, word: expert / 64) & (1 << UInt64(expert % 64)) != 0
    }

    /// Cache-aware routing for layer `layer`: the top-`k` of the router's candidates after
    /// swapping each non-resident pick (never the top-1) for the most probable resident
    /// candidate whose probability is at least `(1 − tolerance)` times the pick's. Reads the
    /// residency mask once, lock-free; the caller still acquires what it runs.
    /// - Parameters:
    ///   - experts: the layer's candidate experts (e.g. the router's top `2k`).
    ///   - probabilities: their router probabilities, same order.
    ///   - k: experts to run; the model's top-k when `nil`.
    ///   - tolerance: relative, in `0...1`.
    /// - Precondition: `experts.count == probabilities.count`; `0 ≤ layer < geometry.layers`.
    public func residentAwareTopK(
        layer: Int, experts: [Int], probabilities: [Double], k: Int? = nil,
        tolerance: Double
    ) -> CacheAwareRouting.Choice {
        let words = residencyMask(layer: layer)
        return CacheAwareRouting.topK(
            experts: experts, probabilities: probabilities, k: k ?? geometry.topK,
            tolerance: tolerance
        ) { e in
            e >= 0 && e < geometry.experts && words[e / 64] & (1 << UInt64(e % 64)) != 0
        }
    }
}

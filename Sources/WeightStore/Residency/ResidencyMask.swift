import Synchronization

/// Which experts are resident, one bit each, readable lock-free: word `w` of layer `l`
/// holds experts `64·w ..< 64·(w + 1)`, bit `e % 64` for expert `e`. The manager sets a
/// bit when an expert is published and clears it before the expert's memory is freed;
/// a reader sees a snapshot that may be stale by the time it acts (a set bit is a good
/// bet, not a pin: acquire still decides).
final class ResidencyMask: Sendable {
    private final class Word: Sendable { let bits = Atomic<UInt64>(0) }
    /// 64-bit words per layer.
    let wordsPerLayer: Int
    private let experts: Int
    private let words: [Word]

    init(geometry g: ResidencyGeometry) {
        experts = g.experts
        wordsPerLayer = (g.experts + 63) / 64
        words = (0 ..< g.layers * wordsPerLayer).map { _ in Word() }
    }

    private func word(_ id: Int) -> Word { words[(id / experts) * wordsPerLayer + (id % experts) / 64] }

    func set(_ id: Int) { word(id).bits.bitwiseOr(1 << UInt64((id % experts) % 64), ordering: .releasing) }
    func clear(_ id: Int) { word(id).bits.bitwiseAnd(~(1 << UInt64((id % experts) % 64)), ordering: .releasing) }

    /// Word `index` of layer `layer`.
    func load(layer: Int, word index: Int) -> UInt64 {
        words[layer * wordsPerLayer + index].bits.load(ordering: .acquiring)
    }
}

/// `window`, windowed frequency: evicts the resident expert its layer used least often in
/// the layer's last ``windowTokens`` tokens, the least recently used among equals. Unlike
/// LFU with aging, what leaves the window is forgotten at once and nothing older counts.
public final class WindowedFrequencyPolicy: ResidencyPolicy {
    public let name = "window"
    /// Tokens of each layer the counts cover.
    public let windowTokens: Int
    private let geometry: ResidencyGeometry
    private var counts: [Int32]
    private var lastUse: [Int]
    private var ring: [[Int32]]  // per layer, the last windowTokens × topK accesses
    private var ringNext: [Int]
    private var clock = 0
    private var resident: ResidentSet

    /// Windowed frequency over `geometry`, counting each layer's last `windowTokens` tokens.
    public init(geometry: ResidencyGeometry, capacity: Int, windowTokens: Int = 80) {
        precondition(windowTokens > 0, "the window must hold a token")
        self.geometry = geometry
        self.windowTokens = windowTokens
        counts = Array(repeating: 0, count: geometry.count)
        lastUse = Array(repeating: 0, count: geometry.count)
        ring = Array(
            repeating: Array(repeating: -1, count: windowTokens * max(1, geometry.topK)), count: geometry.layers)
        ringNext = Array(repeating: 0, count: geometry.layers)
        resident = ResidentSet(count: geometry.count)
    }

    /// Demand uses of `id` in its layer's window.
    public func count(_ id: Int) -> Int { Int(counts[id]) }

    public func accessed(_ id: Int, hit: Bool) {
        let l = geometry.layer(of: id)
        let slot = ringNext[l]
        let old = ring[l][slot]
        if old >= 0 { counts[Int(old)] -= 1 }
        ring[l][slot] = Int32(id)
        ringNext[l] = (slot + 1) % ring[l].count
        counts[id] += 1
        clock += 1
        lastUse[id] = clock
    }

    public func hinted(_ id: Int) {}
    public func inserted(_ id: Int, prefetched: Bool) { resident.insert(id) }
    public func removed(_ id: Int) { resident.remove(id) }

    public func victim(for incoming: Int, isPinned: (Int) -> Bool) -> Int? {
        resident.leastFrequent(counts: counts, lastUse: lastUse, excluding: incoming, isPinned: isPinned)
    }
}

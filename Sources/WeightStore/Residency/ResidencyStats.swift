/// What a residency manager has done so far, overall and per layer.
public struct ResidencyStats: Sendable, Codable {
    /// One layer's counters.
    public struct Layer: Sendable, Codable {
        /// Demand acquires served from memory.
        public var demandHits = 0
        /// Demand acquires that had to load, or wait for an in-flight load.
        public var demandMisses = 0
        /// Demand hits on an expert a prefetch brought in (its first use).
        public var prefetchHits = 0
        /// Prefetched experts evicted without a demand use.
        public var wastedPrefetches = 0
        /// Demand hits served by a low-bit copy.
        public var lowPrecisionHits = 0
        /// Loads for demand acquires.
        public var demandLoads = 0
        /// Loads for prefetch hints.
        public var prefetchLoads = 0
        /// Bytes decoded or copied into memory.
        public var bytesLoaded = 0
        /// Bytes of the loaded copies' records in the store (compressed size): what loads read.
        public var bytesRead = 0
        /// Nanoseconds demand acquires spent waiting on loads or room.
        public var waitNanos: UInt64 = 0
        /// Experts of the layer resident now.
        public var residentExperts = 0
        /// Bytes of the layer's resident experts now.
        public var residentBytes = 0

        /// The fraction of demand acquires served from memory.
        public var hitRate: Double { Double(demandHits) / Double(max(1, demandHits + demandMisses)) }
        /// The fraction of demand acquires that had to load or wait.
        public var missRate: Double { Double(demandMisses) / Double(max(1, demandHits + demandMisses)) }

        mutating func add(_ o: Layer) {
            demandHits += o.demandHits
            demandMisses += o.demandMisses
            prefetchHits += o.prefetchHits
            wastedPrefetches += o.wastedPrefetches
            lowPrecisionHits += o.lowPrecisionHits
            demandLoads += o.demandLoads
            prefetchLoads += o.prefetchLoads
            bytesLoaded += o.bytesLoaded
            bytesRead += o.bytesRead
            waitNanos += o.waitNanos
            residentExperts += o.residentExperts
            residentBytes += o.residentBytes
        }
    }

    /// Per layer, index = layer.
    public var layers: [Layer]
    /// Demand acquires that waited for a load another acquirer or a prefetch had started.
    public var coalescedWaits = 0
    /// Prefetch hints and upgrades dropped because everything in the budget was pinned.
    public var droppedPrefetches = 0
    /// Experts evicted.
    public var evictions = 0
    /// Bytes resident (or reserved by in-flight loads) now.
    public var residentBytes = 0
    /// The most bytes ever resident or reserved at once; never above ``budget``.
    public var peakResidentBytes = 0
    /// The byte budget.
    public var budget = 0
    /// Prefetched copies resident now that no demand acquire has used yet.
    public var unusedPrefetchesResident = 0
    /// Exact copies loaded in the background to upgrade an expert held low-bit.
    public var upgradeLoads = 0
    /// Low-bit copies loaded (demand and hints).
    public var lowPrecisionLoads = 0

    /// Each layer's share of the resident bytes now (all zero when nothing is resident):
    /// how the policy has split the budget between layers.
    public var residentShare: [Double] {
        let total = layers.reduce(0) { $0 + $1.residentBytes }
        return layers.map { total > 0 ? Double($0.residentBytes) / Double(total) : 0 }
    }

    /// The sum over layers.
    public var total: Layer {
        var t = Layer()
        for l in layers { t.add(l) }
        return t
    }
}

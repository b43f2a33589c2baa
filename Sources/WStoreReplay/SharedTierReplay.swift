/// A remote block tier shared by the nodes of a ``SharedTierReplay``.
public protocol SharedBlockTier {
    /// How many leading blocks of `ids` the tier holds (it stops at the first it lacks).
    mutating func leadingRun(_ ids: ArraySlice<Int>) throws -> Int
    /// Adds blocks to the tier (the ones a node computed itself).
    mutating func put(_ ids: ArraySlice<Int>) throws
}

/// An unbounded in-memory shared tier: every block ever put.
public struct UnboundedBlockTier: SharedBlockTier {
    public private(set) var blocks = Set<Int>()
    public init() {}
    public mutating func leadingRun(_ ids: ArraySlice<Int>) throws -> Int {
        ids.firstIndex { !blocks.contains($0) }.map { $0 - ids.startIndex } ?? ids.count
    }
    public mutating func put(_ ids: ArraySlice<Int>) throws { blocks.formUnion(ids) }
}

/// Replays a request trace over several engine nodes that share one remote tier.
///
/// Request i goes to node i mod N. Each node has its own local tier of `capacityBlocks` blocks
/// (LRU over blocks, every block of the request touched in order, as ``PrefixReplay`` with
/// ``PrefixReplay/Policy/lru``). A request's reusable prefix is its longest run of leading
/// blocks each found locally or, after the local run ends, in the shared tier; the blocks it
/// had to compute (past that prefix) are then put in the shared tier, as a KV store's
/// background send does.
public enum SharedTierReplay {
    /// Counts of one replay.
    public struct Result: Sendable, Equatable, Codable {
        public var nodes: Int
        public var capacityBlocks: Int
        public var requests: Int
        /// Prompt blocks seen.
        public var blocks: Int
        /// Leading blocks found in the requesting node's local tier.
        public var localHitBlocks: Int
        /// Leading blocks found in the shared tier after the local run ended.
        public var remoteHitBlocks: Int
        /// Prompt tokens seen, and covered by hit blocks.
        public var tokens: Int
        public var hitTokens: Int
        /// Blocks put in the shared tier.
        public var putBlocks: Int

        public var hitBlocks: Int { localHitBlocks + remoteHitBlocks }
        public var localHitRate: Double { blocks == 0 ? 0 : Double(localHitBlocks) / Double(blocks) }
        public var remoteHitRate: Double { blocks == 0 ? 0 : Double(remoteHitBlocks) / Double(blocks) }
        public var blockHitRate: Double { blocks == 0 ? 0 : Double(hitBlocks) / Double(blocks) }
        public var tokenHitRate: Double { tokens == 0 ? 0 : Double(hitTokens) / Double(tokens) }
    }

    /// Replays `requests` over `nodes` nodes with local tiers of `capacityBlocks` blocks (0: unbounded)
    /// and the shared `tier` (`nil`: local tiers only). `perRequest`, if given, receives each request's
    /// node and local and remote hit blocks (e.g. to time them).
    /// - Throws: what the tier throws.
    public static func run<T: SharedBlockTier>(
        _ requests: [TraceRequest], nodes: Int, capacityBlocks: Int, blockTokens: Int,
        tier: inout T?, perRequest: ((Int, Int, Int) -> Void)? = nil
    ) throws -> Result {
        precondition(nodes > 0)
        var r = Result(
            nodes: nodes, capacityBlocks: capacityBlocks, requests: requests.count, blocks: 0, localHitBlocks: 0,
            remoteHitBlocks: 0, tokens: 0, hitTokens: 0, putBlocks: 0)
        var caches = (0 ..< nodes).map { _ in BlockCache(policy: .lru, capacity: capacityBlocks) }
        for (i, req) in requests.enumerated() {
            let n = i % nodes
            let ids = req.hashIDs
            var local = 0
            while local < ids.count && caches[n].contains(ids[local]) { local += 1 }
            var remote = 0
            if tier != nil && local < ids.count { remote = try tier!.leadingRun(ids[local...]) }
            var parent: Int? = nil
            for id in ids {
                _ = caches[n].use(id, parent: parent)
                parent = id
            }
            if tier != nil && local + remote < ids.count {
                try tier!.put(ids[(local + remote)...])
                r.putBlocks += ids.count - local - remote
            }
            perRequest?(n, local, remote)
            r.blocks += ids.count
            r.localHitBlocks += local
            r.remoteHitBlocks += remote
            r.tokens += req.inputLength
            r.hitTokens += min((local + remote) * blockTokens, req.inputLength)
        }
        return r
    }
}

import ArgumentParser
import Foundation
import Histogram
import KVCache
import WStoreCore
import WStoreRemote
import WStoreReplay

/// `wstore bench kv --nodes N [--remote URL]`: engine nodes sharing one remote tier.
extension BenchKV {
    struct Latency: Codable {
        var count: Int, p50Micros: Double, p99Micros: Double
        init(_ h: Histogram<UInt64>) {
            count = Int(h.totalCount)
            p50Micros = h.totalCount == 0 ? 0 : Double(h.valueAtPercentile(50)) / 1000
            p99Micros = h.totalCount == 0 ? 0 : Double(h.valueAtPercentile(99)) / 1000
        }
    }

    struct NodesRow: Codable {
        var capacityBlocks: Int
        /// The nodes with their local tiers only.
        var localOnly: SharedTierReplay.Result
        /// The same nodes sharing the remote tier.
        var shared: SharedTierReplay.Result
        /// One node with an unbounded cache (plain LRU replay): what an unbounded shared tier must reach.
        var singleNodeUnboundedHitRate: Double
        /// The remote probe and fetch of each request that reached the remote tier (one pipelined
        /// EXISTS, then one pipelined GET of the run found). The local tiers here are in-memory
        /// block sets; `store` times real lookups.
        var remoteLookup: Latency
        /// Value bytes fetched from and sent to the remote tier.
        var bytesFetched: Int, bytesSent: Int
    }

    struct NodesStoreReport: Codable {
        var shape: Shape, codec: String, requests: Int, capacityBlocks: Int
        var localHitChunks: Int, remoteHitChunks: Int
        /// Leading blocks a single node with an unbounded cache finds in the same requests.
        var singleNodeUnboundedHitBlocks: Int
        var bytesFetched: Int, bytesSent: Int, remoteErrors: Int, damagedRemote: Int, queueDrops: Int
        var localOnlyLookup: Latency, withRemoteLookup: Latency
    }

    struct NodesReport: Codable {
        var trace: String, requests: Int, blockTokens: Int, nodes: Int, remote: String
        var rows: [NodesRow]
        /// One node with an unbounded cache (plain LRU replay).
        var singleNodeUnbounded: PrefixReplay.Result
        var store: NodesStoreReport?
    }

    /// A shared tier in Redis: block `id` is key `<namespace>b:<id>` holding the id's 8 bytes.
    final class RedisBlockTier: SharedBlockTier {
        let client: RedisClient
        let namespace: String
        var keys: [[UInt8]] = []
        var bytesFetched = 0, bytesSent = 0
        var timer = Histogram<UInt64>(highestTrackableValue: 60_000_000_000)

        init(client: RedisClient, namespace: String) {
            self.client = client
            self.namespace = namespace
        }

        func key(_ id: Int) -> [UInt8] { Array("\(namespace)b:\(id)".utf8) }

        /// One pipelined EXISTS over the rest of the request, then one pipelined GET of the run found.
        func leadingRun(_ ids: ArraySlice<Int>) throws -> Int {
            let t0 = DispatchTime.now().uptimeNanoseconds
            let present = try client.exists(ids.map(key))
            var run = present.firstIndex(of: false) ?? present.count
            if run > 0 {
                let values = try client.get(ids.prefix(run).map(key))
                run = values.firstIndex { $0 == nil } ?? run
                bytesFetched += values.prefix(run).reduce(0) { $0 + ($1?.count ?? 0) }
            }
            _ = timer.record(DispatchTime.now().uptimeNanoseconds - t0)
            return run
        }

        func put(_ ids: ArraySlice<Int>) throws {
            let pairs = ids.map { id in (key(id), withUnsafeBytes(of: UInt64(id).littleEndian) { Array($0) }) }
            let set = try client.setIfAbsent(pairs)
            for (i, p) in pairs.enumerated() where set[i] {
                keys.append(p.0)
                bytesSent += p.1.count
            }
        }

        /// Deletes every key this replay made.
        func clean() throws {
            var i = 0
            while i < keys.count {
                let batch = keys[i ..< min(i + 1000, keys.count)]
                _ = try client.pipeline(batch.map { RedisClient.Command([Array("DEL".utf8), $0]) })
                i += 1000
            }
            keys = []
        }
    }

    /// The replays of `--nodes` (and, with `--model-shape`, the KV stores), as a report.
    func nodesReport(_ reqs: [TraceRequest], label: String, nodes: Int) throws -> NodesReport {
        let client: RedisClient? = remote.isEmpty ? nil : try RedisClient(urls: remote)
        let remoteLabel =
            client.map { "\(remote.joined(separator: ","))" + ($0.isCluster ? " (Redis Cluster)" : " (Redis)") }
            ?? "in-memory, unbounded (no --remote given)"
        let single = PrefixReplay.run(reqs, capacityBlocks: 0, blockTokens: blockTokens, policy: .lru)
        var rows: [NodesRow] = []
        for cap in try capacities() {
            var none: UnboundedBlockTier? = nil
            let localOnly = try SharedTierReplay.run(
                reqs, nodes: nodes, capacityBlocks: cap, blockTokens: blockTokens, tier: &none)
            let shared: SharedTierReplay.Result
            var fetched = 0, sent = 0
            var remoteTimes = Histogram<UInt64>(highestTrackableValue: 60_000_000_000)
            if let client {
                let tier = RedisBlockTier(client: client, namespace: "wstore:bench:\(UUID().uuidString):")
                var t: RedisBlockTier? = tier
                defer { try? tier.clean() }
                shared = try SharedTierReplay.run(
                    reqs, nodes: nodes, capacityBlocks: cap, blockTokens: blockTokens, tier: &t)
                (fetched, sent, remoteTimes) = (tier.bytesFetched, tier.bytesSent, tier.timer)
            } else {
                var t: UnboundedBlockTier? = UnboundedBlockTier()
                shared = try SharedTierReplay.run(
                    reqs, nodes: nodes, capacityBlocks: cap, blockTokens: blockTokens, tier: &t)
            }
            rows.append(
                NodesRow(
                    capacityBlocks: cap, localOnly: localOnly, shared: shared,
                    singleNodeUnboundedHitRate: single.blockHitRate, remoteLookup: Latency(remoteTimes),
                    bytesFetched: fetched, bytesSent: sent))
        }
        var storeReport: NodesStoreReport?
        if let modelShape {
            guard !remote.isEmpty else {
                throw ValidationError("--model-shape with --nodes needs --remote (a real server)")
            }
            storeReport = try nodesThroughStores(
                Array(reqs.prefix(requests)), nodes: nodes, shape: try parseShape(modelShape),
                capacity: try capacities()[0])
        }
        return NodesReport(
            trace: label, requests: reqs.count, blockTokens: blockTokens, nodes: nodes,
            remote: remoteLabel, rows: rows, singleNodeUnbounded: single, store: storeReport)
    }

    func runNodes(_ reqs: [TraceRequest], label: String, nodes: Int) throws {
        let report = try nodesReport(reqs, label: label, nodes: nodes)
        let (rows, single, remoteLabel) = (report.rows, report.singleNodeUnbounded, report.remote)
        if json {
            try JSONOutput.print(report)
            return
        }
        print(
            "trace: \(label): \(reqs.count) requests over \(nodes) nodes (request i on node i mod \(nodes)), \(single.blocks) blocks of \(blockTokens) tokens"
        )
        print(
            "shared tier: \(remoteLabel); one node, unbounded: block hit rate \(String(format: "%.4f", single.blockHitRate))"
        )
        func pct(_ x: Double) -> String { String(format: "%.2f%%", 100 * x) }
        print(
            TextTable(
                [
                    "local tier (blocks/node)", "local only", "local", "remote", "total", "token hit rate", "fetched",
                    "sent",
                ],
                rows.map { r in
                    [
                        r.capacityBlocks == 0 ? "unbounded" : String(r.capacityBlocks), pct(r.localOnly.blockHitRate),
                        pct(r.shared.localHitRate), pct(r.shared.remoteHitRate), pct(r.shared.blockHitRate),
                        pct(r.shared.tokenHitRate), formatBytes(r.bytesFetched), formatBytes(r.bytesSent),
                    ]
                }
            ).render())
        print()
        if !remote.isEmpty {
            print(
                TextTable(
                    ["local tier (blocks/node)", "remote probe+fetch p50 (µs)", "p99 (µs)", "remote lookups"],
                    rows.map { r in
                        [
                            r.capacityBlocks == 0 ? "unbounded" : String(r.capacityBlocks),
                            String(format: "%.1f", r.remoteLookup.p50Micros),
                            String(format: "%.1f", r.remoteLookup.p99Micros),
                            String(r.remoteLookup.count),
                        ]
                    }
                ).render())
            print(
                "(the local tiers of this replay are in-memory block sets; --model-shape times real KV store lookups per tier)"
            )
        }
        if let s = report.store {
            print()
            print(
                "through KV stores: first \(s.requests) requests, layers=\(s.shape.layers) kv_heads=\(s.shape.kvHeads) head_dim=\(s.shape.headDim) \(s.shape.dtype), codec \(s.codec), \(s.capacityBlocks == 0 ? "unbounded" : "\(s.capacityBlocks) chunks") per node"
            )
            print(
                TextTable(
                    ["lookups", "count", "p50 (ms)", "p99 (ms)"],
                    [
                        [
                            "local chunks only", String(s.localOnlyLookup.count),
                            String(format: "%.2f", s.localOnlyLookup.p50Micros / 1000),
                            String(format: "%.2f", s.localOnlyLookup.p99Micros / 1000),
                        ],
                        [
                            "with remote chunks", String(s.withRemoteLookup.count),
                            String(format: "%.2f", s.withRemoteLookup.p50Micros / 1000),
                            String(format: "%.2f", s.withRemoteLookup.p99Micros / 1000),
                        ],
                    ]
                ).render())
            print(
                "hit chunks: \(s.localHitChunks) local + \(s.remoteHitChunks) remote = \(s.localHitChunks + s.remoteHitChunks); one unbounded node: \(s.singleNodeUnboundedHitBlocks) (\(s.localHitChunks + s.remoteHitChunks == s.singleNodeUnboundedHitBlocks ? "equal" : "DIFFERENT")); fetched \(formatBytes(s.bytesFetched)), sent \(formatBytes(s.bytesSent)); remote errors \(s.remoteErrors), damaged \(s.damagedRemote), queue drops \(s.queueDrops)"
            )
        }
    }

    /// N real KV stores with the remote tier, one chunk per block, generated KV of `shape`.
    func nodesThroughStores(_ reqs: [TraceRequest], nodes: Int, shape: (Shape, DType), capacity: Int) throws
        -> NodesStoreReport
    {
        let (s, dtype) = shape
        let root = NSTemporaryDirectory() + "wstore-bench-kv-nodes-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: root) }
        var o = KVStore.Options()
        o.chunkTokens = blockTokens
        o.codec = codec
        o.maxChunks = capacity
        o.threads = threads
        var r = RemoteTierOptions(urls: remote)
        r.namespace = "wstore:bench:\(UUID().uuidString):"
        r.timeout = .seconds(5)
        let stores = try (0 ..< nodes).map { try KVStore.create(at: root + "/node\($0)", options: o, remote: r) }
        let block = blockMaker(s, dtype)
        var localOnly = Histogram<UInt64>(highestTrackableValue: 600_000_000_000)
        var withRemote = Histogram<UInt64>(highestTrackableValue: 600_000_000_000)
        var local = 0, remoteHits = 0
        for (i, req) in reqs.enumerated() where !req.hashIDs.isEmpty {
            let node = stores[i % nodes]
            let tokens = req.hashIDs.flatMap { id in
                (0 ..< blockTokens).map { UInt32(truncatingIfNeeded: id &* blockTokens &+ $0) }
            }
            let t0 = DispatchTime.now().uptimeNanoseconds
            let found = try node.lookup(tokens: tokens, model: "bench")
            let dt = DispatchTime.now().uptimeNanoseconds - t0
            _ = found.remoteChunks > 0 ? withRemote.record(dt) : localOnly.record(dt)
            local += found.chunks - found.remoteChunks
            remoteHits += found.remoteChunks
            try node.store(tokens: tokens, model: "bench", kv: try KVCacheData.concatenate(try req.hashIDs.map(block)))
            node.flushRemote(timeout: .seconds(60))  // the next request may need these chunks
        }
        var singleHits = 0
        _ = PrefixReplay.run(
            reqs.filter { !$0.hashIDs.isEmpty }, capacityBlocks: 0, blockTokens: blockTokens,
            policy: .lru
        ) { singleHits += $0 }
        let stats = stores.compactMap { $0.tierStats() }
        // Remove what this run put in the shared tier.
        if let client = try? RedisClient(urls: remote) {
            let keys = Set(
                reqs.flatMap { req in
                    PrefixKey.chain(
                        tokens: req.hashIDs.flatMap { id in
                            (0 ..< blockTokens).map { UInt32(truncatingIfNeeded: id &* blockTokens &+ $0) }
                        },
                        chunkTokens: blockTokens, model: "bench")
                }
            ).map { Array("\(r.namespace)\(String(format: "%016llx", $0))".utf8) }
            _ = try? client.pipeline(keys.map { RedisClient.Command([Array("DEL".utf8), $0]) })
        }
        return NodesStoreReport(
            shape: s, codec: codec.rawValue, requests: reqs.count, capacityBlocks: capacity,
            localHitChunks: local, remoteHitChunks: remoteHits, singleNodeUnboundedHitBlocks: singleHits,
            bytesFetched: stats.reduce(0) { $0 + $1.bytesFetched }, bytesSent: stats.reduce(0) { $0 + $1.bytesSent },
            remoteErrors: stats.reduce(0) { $0 + $1.remoteErrors },
            damagedRemote: stats.reduce(0) { $0 + $1.damagedRemote },
            queueDrops: stats.reduce(0) { $0 + $1.queueDrops },
            localOnlyLookup: Latency(localOnly), withRemoteLookup: Latency(withRemote))
    }
}

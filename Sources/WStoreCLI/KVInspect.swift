import ArgumentParser
import Foundation
import KVCache

/// `wstore kv inspect`: what a KV store holds.
struct KVInspect: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "inspect", abstract: "Show what a KV store holds.")

    @Argument(help: "The KV store directory.") var store: String
    @Flag(help: "Also decode every chunk and check its checksums; exit non-zero if any is damaged.") var verify = false
    @Option(help: "A shared remote tier to check: redis://[user:password@]host:port (repeat for cluster seeds).")
    var remote: [String] = []
    @Option(help: "With --remote: the key prefix the store's remote tier uses.") var namespace = RemoteTierOptions(
        urls: []).namespace
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        var tier: RemoteTierOptions?
        if !remote.isEmpty {
            var r = RemoteTierOptions(urls: remote)
            r.namespace = namespace
            r.warnings = false
            tier = r
        }
        let s = try KVStore.open(at: store, readOnly: true, remote: tier)
        let stats = try s.stats()
        let remoteReport = try s.inspectRemote()
        let o = s.options
        let damaged: [String]? = verify ? try s.verify().map { "\($0.error)" } : nil
        defer { if let damaged, !damaged.isEmpty { Foundation.exit(1) } }
        if json {
            struct Report: Codable {
                var store: String, chunkTokens: Int, codec: String, budgetBytes: Int, maxChunks: Int
                var kiviGroup: Int, kiviResidual: Int, stats: KVStore.Stats, damagedChunks: [String]?
                var remote: KVRemoteInspection?
            }
            try JSONOutput.print(
                Report(
                    store: store, chunkTokens: o.chunkTokens, codec: o.codec.rawValue,
                    budgetBytes: o.budgetBytes, maxChunks: o.maxChunks, kiviGroup: o.kivi.group,
                    kiviResidual: o.kivi.residual, stats: stats, damagedChunks: damaged,
                    remote: remoteReport))
            return
        }
        let budget = o.budgetBytes == 0 ? "none" : formatBytes(o.budgetBytes)
        print(
            TextTable(
                ["setting", "value"],
                [
                    ["store", store], ["chunk tokens", String(o.chunkTokens)],
                    [
                        "codec",
                        o.codec.rawValue
                            + (o.codec.bits != nil ? " (group \(o.kivi.group), residual \(o.kivi.residual))" : ""),
                    ],
                    ["byte budget", budget], ["chunk limit", o.maxChunks == 0 ? "none" : String(o.maxChunks)],
                ]
            ).render())
        print()
        var rows = stats.chunksByModel.keys.sorted().map { [$0, String(stats.chunksByModel[$0]!)] }
        rows.append(["all models", String(stats.chunks)])
        print(TextTable(["model", "chunks"], rows).render())
        print()
        print(
            TextTable(
                ["chunks", "leaves", "raw KV", "stored", "ratio"],
                [
                    [
                        String(stats.chunks), String(stats.leaves), formatBytes(stats.rawBytes),
                        formatBytes(stats.storedBytes),
                        stats.storedBytes == 0
                            ? "-" : String(format: "%.2fx", Double(stats.rawBytes) / Double(stats.storedBytes)),
                    ]
                ]
            ).render())
        if let r = remoteReport {
            print()
            printRemote(r, chunks: stats.chunks)
        }
        if let damaged {
            print()
            print(
                damaged.isEmpty
                    ? "verify: all \(stats.chunks) chunks decode and match their checksums"
                    : "verify: \(damaged.count) problems in a store of \(stats.chunks) chunks")
            for d in damaged { FileHandle.standardError.write(Data((d + "\n").utf8)) }
        }
    }

    func printRemote(_ r: KVRemoteInspection, chunks: Int) {
        let t = r.stats
        print(
            TextTable(
                ["tier", "where", "this store's chunks", "state"],
                [
                    ["local", store, String(chunks), "-"],
                    [
                        "remote", remote.joined(separator: ",") + " (keys \(namespace)…)",
                        r.alsoRemote.map { "\($0) of \(r.localChunks)" } ?? "?",
                        t.connected ? "connected" : "down: \(t.lastError ?? "?")",
                    ],
                ]
            ).render())
        if let max = r.maxMemory, let policy = r.evictionPolicy {
            let evicts = policy.contains("lru") || policy.contains("lfu")
            print(
                "remote memory: \(formatBytes(r.usedMemory ?? 0)) used, maxmemory \(max == 0 ? "none" : formatBytes(max)), policy \(policy)"
                    + (max > 0 && evicts
                        ? ""
                        : "; warning: set maxmemory and an LRU or LFU maxmemory-policy (allkeys-lru), or the tier grows until Redis refuses writes")
            )
        }
        print()
        print(
            TextTable(
                ["counter (this handle)", "value"],
                [
                    ["local hit chunks", String(t.localHitChunks)], ["remote hit chunks", String(t.remoteHitChunks)],
                    ["bytes fetched", formatBytes(t.bytesFetched)], ["bytes sent", formatBytes(t.bytesSent)],
                    ["remote errors", String(t.remoteErrors)], ["damaged remote values", String(t.damagedRemote)],
                    ["queue drops", String(t.queueDrops)], ["unsent chunks", String(t.unsentChunks)],
                    ["reconnects", String(t.reconnects)],
                ]
            ).render())
    }
}

import ArgumentParser
import Foundation
import KVCache

/// `wstore kv inspect`: what a KV store holds.
struct KVInspect: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "inspect", abstract: "Show what a KV store holds.")

    @Argument(help: "The KV store directory.") var store: String
    @Flag(help: "Also decode every chunk and check its checksums; exit non-zero if any is damaged.") var verify = false
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        let s = try KVStore.open(at: store, readOnly: true)
        let stats = try s.stats()
        let o = s.options
        let damaged: [String]? = verify ? try s.verify().map { "\($0.error)" } : nil
        defer { if let damaged, !damaged.isEmpty { Foundation.exit(1) } }
        if json {
            struct Report: Codable {
                var store: String, chunkTokens: Int, codec: String, budgetBytes: Int, maxChunks: Int
                var kiviGroup: Int, kiviResidual: Int, stats: KVStore.Stats, damagedChunks: [String]?
            }
            try JSONOutput.print(Report(store: store, chunkTokens: o.chunkTokens, codec: o.codec.rawValue,
                                        budgetBytes: o.budgetBytes, maxChunks: o.maxChunks, kiviGroup: o.kivi.group,
                                        kiviResidual: o.kivi.residual, stats: stats, damagedChunks: damaged))
            return
        }
        let budget = o.budgetBytes == 0 ? "none" : formatBytes(o.budgetBytes)
        print(TextTable(["setting", "value"], [
            ["store", store], ["chunk tokens", String(o.chunkTokens)],
            ["codec", o.codec.rawValue + (o.codec.bits != nil ? " (group \(o.kivi.group), residual \(o.kivi.residual))" : "")],
            ["byte budget", budget], ["chunk limit", o.maxChunks == 0 ? "none" : String(o.maxChunks)],
        ]).render())
        print()
        var rows = stats.chunksByModel.keys.sorted().map { [$0, String(stats.chunksByModel[$0]!)] }
        rows.append(["all models", String(stats.chunks)])
        print(TextTable(["model", "chunks"], rows).render())
        print()
        print(TextTable(["chunks", "leaves", "raw KV", "stored", "ratio"], [[
            String(stats.chunks), String(stats.leaves), formatBytes(stats.rawBytes), formatBytes(stats.storedBytes),
            stats.storedBytes == 0 ? "-" : String(format: "%.2fx", Double(stats.rawBytes) / Double(stats.storedBytes)),
        ]]).render())
        if let damaged {
            print()
            print(damaged.isEmpty ? "verify: all \(stats.chunks) chunks decode and match their checksums"
                                  : "verify: \(damaged.count) problems in a store of \(stats.chunks) chunks")
            for d in damaged { FileHandle.standardError.write(Data((d + "\n").utf8)) }
        }
    }
}

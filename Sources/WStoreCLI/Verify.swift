import ArgumentParser
import Foundation
import WeightStore

/// `wstore verify`: re-checks every checksum; names each corrupt tensor; exits 1 if any.
struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Re-check every tensor's checksum; exit 1 naming each corrupt tensor.")

    @Argument(help: "The store directory.")
    var store: String

    @Flag(help: "Print JSON with the same facts.")
    var json = false

    @Option(help: "Decode threads (default: every core).")
    var threads: Int?

    /// The facts of `verify --json`.
    struct Report: Codable {
        struct Failure: Codable {
            var model: String
            var tensor: String
            var reason: String
        }
        var store: String
        var ok: Bool
        var tensors_checked: Int
        var variants_checked: Int
        var bytes_checked: Int
        var failures: [Failure]
    }

    func run() throws {
        // Walk the B-tree pages before LMDB touches them, so a damaged tree is listed in
        // full rather than refused at open in one line.
        var r = WeightStore.VerifyReport()
        if FileManager.default.fileExists(atPath: self.store + "/data.mdb") {
            let (pages, problems) = try WeightStore.checkDataFile(at: self.store)
            r.pagesChecked = pages
            r.failures = problems.map { .init(model: "-", name: "data.mdb", reason: $0) }
        }
        if r.failures.isEmpty {
            let store = try WeightStore.open(at: self.store)
            r = try threads.map { try store.verify(threads: $0) } ?? store.verify()
        }
        let report = Report(
            store: self.store, ok: r.failures.isEmpty, tensors_checked: r.tensorsChecked,
            variants_checked: r.variantsChecked, bytes_checked: r.bytesChecked,
            failures: r.failures.map { .init(model: $0.model, tensor: $0.name, reason: $0.reason) })
        if json {
            try JSONOutput.print(report)
        } else {
            if !r.failures.isEmpty {
                var t = TextTable("model", "tensor", "problem")
                for f in r.failures { t.add(f.model, f.name, f.reason) }
                print(t.render())
            }
            print(
                "\(report.ok ? "ok" : "CORRUPT"): \(r.tensorsChecked) tensors, \(formatBytes(r.bytesChecked)) checked, "
                    + "\(r.expertEntriesChecked) expert index entries, "
                    + (r.variantsChecked > 0 ? "\(r.variantsChecked) expert variants, " : "")
                    + "\(r.pagesChecked) B-tree pages, \(r.failures.count) corrupt"
            )
        }
        if !report.ok { throw ExitCode(1) }
    }
}

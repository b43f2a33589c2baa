import ArgumentParser
import Foundation
import WStoreCore
import WeightStore

/// `wstore upgrade`: rewrites a version-1 store as the current format, atomically.
struct Upgrade: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Rewrite a store of an older format version as the current one (format-spec/FORMAT.md §5).",
        discussion: """
            Every tensor is decoded, checked and written again with the same codec, with the expert \
            index and model info. The new store is built beside STORE and moved into place only when \
            complete, as pack does; on any failure the old store is left as it was.
            """)

    @Argument(help: "The store directory.")
    var store: String

    @Flag(help: "Print nothing but errors.")
    var quiet = false

    func run() throws {
        let version: Int
        do {
            let source = try WeightStore.open(at: store)
            version = source.formatVersion
        }
        guard version < Int(Record.formatVersion) else {
            if !quiet { print("\(store) already uses format version \(version); nothing to do") }
            return
        }
        let staged = try StagedStore(target: store)
        staged.armSignals()
        defer { staged.disarmSignals() }
        let tensors: Int
        do {
            tensors = try copy(into: staged.staging)
            try staged.commit()
        } catch {
            staged.discard()
            throw error
        }
        if !quiet {
            print("upgraded \(store) from format version \(version) to \(Record.formatVersion): \(tensors) tensors")
        }
    }

    /// Copies every model into a new store at `path`; returns the tensors copied.
    private func copy(into path: String) throws -> Int {
        let source = try WeightStore.open(at: store)
        var options = WeightStore.Options()
        options.durable = false
        let dest = try WeightStore.create(at: path, options: options)
        var count = 0
        for model in try source.models() {
            for t in try source.tensors(model: model) {
                let bytes = try source.readBytes(t.name, model: model)
                try bytes.withUnsafeBytes {
                    _ = try dest.put(
                        t.name, model: model, dtype: t.dtype, shape: t.shape, bytes: $0,
                        codec: t.codec == "raw" ? .raw : .zstd)
                }
                count += 1
            }
            let experts = try source.experts(model: model)
            try dest.write { w in
                for e in experts {
                    for (part, tensor) in e.parts {
                        try w.setExpert(
                            ExpertKey(layer: e.layer, expert: e.expert, part: part), tensor: tensor, model: model)
                    }
                }
            }
            if let info = try source.modelInfo(model) { try dest.setModelInfo(info) }
        }
        try dest.sync()
        return count
    }
}

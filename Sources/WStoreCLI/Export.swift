import ArgumentParser
import Foundation
import WStoreCore
import WeightStore

/// `wstore export`: writes a store's tensors out as a safetensors file, byte-identical.
struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Export tensors as a safetensors file, byte-identical to what was packed.")

    @Argument(help: "The store directory.")
    var store: String

    @Option(name: .shortAndLong, help: "The .safetensors file to write.")
    var output: String

    @Option(help: "Only tensors whose name matches this shell glob (e.g. 'model.layers.0.*').")
    var filter: String?

    @Option(help: "The model namespace (needed when the store holds more than one).")
    var model: String?

    @Flag(help: "Print nothing but errors.")
    var quiet = false

    func run() throws {
        let store = try WeightStore.open(at: self.store)
        let models = try store.models()
        let name: String
        if let model {
            guard models.contains(model) else {
                throw WStoreError.notFound(
                    "model \(model) in \(self.store) (it has: \(models.joined(separator: ", ")))")
            }
            name = model
        } else {
            guard models.count == 1 else {
                throw WStoreError.invalidArgument(
                    "\(self.store) holds \(models.count) models (\(models.joined(separator: ", "))); choose one with --model"
                )
            }
            name = models[0]
        }
        let glob = filter
        let summary = try SafetensorsExport.export(store, model: name, to: output) { n in
            guard let glob else { return true }
            return Posix.matches(n, glob: glob)
        }
        if filter != nil && summary.tensors == 0 {
            FileHandle.standardError.write(Data("warning: no tensor matches \(filter!); wrote an empty file\n".utf8))
        }
        if !quiet {
            print("exported \(summary.tensors) tensors, \(formatBytes(summary.bytes)), of model \(name) to \(output)")
        }
    }
}

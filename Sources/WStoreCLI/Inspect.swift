import ArgumentParser
import Foundation
import WeightStore

/// `wstore inspect`: what a store holds.
struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show what a store holds.")

    @Argument(help: "The store directory.")
    var store: String

    func run() throws {
        let store = try WeightStore.open(at: self.store)
        let meta = try store.metadata()
        print("store \(self.store): format v\(meta.formatVersion), created by \(meta.createdBy) at \(meta.created)")
        for model in try store.models() {
            let tensors = try store.tensors(model: model)
            let raw = tensors.reduce(0) { $0 + $1.rawSize }, stored = tensors.reduce(0) { $0 + $1.storedSize }
            let info = try store.modelInfo(model)
            var line = "model \(model): \(tensors.count) tensors, \(formatBytes(raw)) raw, \(formatBytes(stored)) stored"
            if raw > 0 { line += String(format: " (%.3fx)", Double(raw) / Double(max(stored, 1))) }
            print(line)
            if let info, let l = info.layers, let e = info.expertsPerLayer {
                print("  \(l) layers × \(e) experts, top-\(info.topK.map(String.init) ?? "?"); \(try store.experts(model: model).count) experts indexed")
            }
        }
    }
}

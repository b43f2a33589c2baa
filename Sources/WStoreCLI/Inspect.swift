import ArgumentParser
import Foundation
import WStoreFormats
import WeightStore

/// `wstore inspect`: what a store holds, as tables or JSON (format-spec/IMPORT-EXPORT.md §4).
struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show what a store holds: models, experts per layer, sizes and ratios, the largest tensors.")

    @Argument(help: "The store directory.")
    var store: String

    @Option(help: "Only this model namespace.")
    var model: String?

    @Flag(help: "Print JSON with the same facts.")
    var json = false

    @Flag(help: "List every tensor.")
    var tensors = false

    @Flag(help: "List every expert and its tensors.")
    var experts = false

    @Option(help: "How many of the largest tensors to list.")
    var largest = 10

    func run() throws {
        let store = try WeightStore.open(at: self.store)
        let report = try InspectReport.build(
            store, path: self.store, only: model, tensors: tensors, experts: experts, largest: largest)
        if json {
            try JSONOutput.print(report)
        } else {
            print(report.text)
        }
    }
}

/// The facts `wstore inspect` shows; its JSON form is `inspect --json`.
struct InspectReport: Codable {
    struct Group: Codable {
        var dtype: String
        var codec: String
        var tensors: Int
        var raw_bytes: Int
        var stored_bytes: Int
    }
    struct Layer: Codable {
        var layer: Int
        var experts: Int
        var shared_experts: Int
        var expert_tensors: Int
        var raw_bytes: Int
        var stored_bytes: Int
    }
    struct Tensor: Codable {
        var name: String
        var dtype: String
        var shape: [Int]
        var codec: String
        var raw_bytes: Int
        var stored_bytes: Int
    }
    struct Expert: Codable {
        var layer: Int
        var expert: Int
        var shared: Bool
        var parts: [String: String]
        /// Part name → the precisions stored for it, finest first (`exact`, `q8_0`, `q4_0`).
        var precisions: [String: [String]]
    }
    /// Expert parts by precision (format-spec/FORMAT.md §8): `exact` is the lossless tensors.
    struct Precision: Codable {
        var precision: String
        var parts: Int
        var raw_bytes: Int
        var stored_bytes: Int
        /// Stored bytes over the stored bytes of the same parts' exact tensors.
        var share_of_exact: Double
    }
    /// Expert parts that have no variant, by reason.
    struct NoVariant: Codable {
        var reason: String
        var parts: Int
    }
    struct Model: Codable {
        var name: String
        var layers: Int?
        var experts_per_layer: Int?
        var top_k: Int?
        var sources: [String]
        var metadata_keys: Int
        var tensor_count: Int
        var raw_bytes: Int
        var stored_bytes: Int
        var experts_indexed: Int
        var by_dtype_codec: [Group]
        var expert_layers: [Layer]
        var largest: [Tensor]
        var tensors: [Tensor]?
        var experts: [Expert]?
        var expert_precisions: [Precision]
        var parts_without_variants: [NoVariant]
    }
    var store: String
    var format_version: Int
    var created_by: String
    var created: String
    var models: [Model]

    static func build(
        _ store: WeightStore, path: String, only: String?, tensors listTensors: Bool, experts listExperts: Bool,
        largest: Int
    ) throws -> InspectReport {
        let meta = try store.metadata()
        var models: [Model] = []
        let names = try store.models()
        if let only, !names.contains(only) {
            throw WStoreError.notFound("model \(only) in \(path) (it has: \(names.joined(separator: ", ")))")
        }
        try store.withSnapshot { s in
            for name in names where only == nil || only == name {
                let info = try store.modelInfo(name)
                let ts = try s.tensors(model: name)
                let byName = Dictionary(ts.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
                var groups: [String: Group] = [:]
                for t in ts {
                    let k = "\(t.dtype)/\(t.codec)"
                    var g =
                        groups[k]
                        ?? Group(dtype: displayName(t.dtype), codec: t.codec, tensors: 0, raw_bytes: 0, stored_bytes: 0)
                    g.tensors += 1
                    g.raw_bytes += t.rawSize
                    g.stored_bytes += t.storedSize
                    groups[k] = g
                }
                let ex = try s.experts(model: name)
                var layers: [Int: Layer] = [:]
                for e in ex {
                    var l =
                        layers[e.layer]
                        ?? Layer(
                            layer: e.layer, experts: 0, shared_experts: 0, expert_tensors: 0, raw_bytes: 0,
                            stored_bytes: 0)
                    if e.expert >= ExpertNaming.sharedExpertBase { l.shared_experts += 1 } else { l.experts += 1 }
                    for t in e.parts.values {
                        guard let i = byName[t] else { continue }
                        l.expert_tensors += 1
                        l.raw_bytes += i.rawSize
                        l.stored_bytes += i.storedSize
                    }
                    layers[e.layer] = l
                }
                // Bytes per precision, and which parts have no variant and why.
                let vs = try s.variants(model: name)
                var exactOf: [ExpertKey: TensorInfo] = [:]
                for e in ex {
                    for (part, t) in e.parts {
                        if let i = byName[t] { exactOf[ExpertKey(layer: e.layer, expert: e.expert, part: part)] = i }
                    }
                }
                var precisions: [Precision] = []
                if !exactOf.isEmpty {
                    let raw = exactOf.values.reduce(0) { $0 + $1.rawSize }
                    let stored = exactOf.values.reduce(0) { $0 + $1.storedSize }
                    precisions.append(
                        Precision(
                            precision: "exact", parts: exactOf.count, raw_bytes: raw, stored_bytes: stored,
                            share_of_exact: 1))
                }
                var withVariant: [ExpertPrecision: Set<ExpertKey>] = [:]
                for p in ExpertPrecision.variants {
                    let these = vs.filter { $0.precision == p }
                    guard !these.isEmpty else { continue }
                    withVariant[p] = Set(these.map(\.key))
                    let exactStored = these.reduce(0) { $0 + (exactOf[$1.key]?.storedSize ?? 0) }
                    let stored = these.reduce(0) { $0 + $1.storedSize }
                    precisions.append(
                        Precision(
                            precision: p.name, parts: these.count, raw_bytes: these.reduce(0) { $0 + $1.rawSize },
                            stored_bytes: stored,
                            share_of_exact: exactStored > 0 ? Double(stored) / Double(exactStored) : 0
                        ))
                }
                var noVariant: [String: Int] = [:]
                if !vs.isEmpty {
                    for (k, t) in exactOf where !withVariant.values.contains(where: { $0.contains(k) }) {
                        let why = VariantQuantizer.ineligibility(dtype: t.dtype, shape: t.shape) ?? "not quantized"
                        noVariant[why, default: 0] += 1
                    }
                }
                func precisionsOf(_ e: ExpertEntry) -> [String: [String]] {
                    var out: [String: [String]] = [:]
                    for part in e.parts.keys {
                        let k = ExpertKey(layer: e.layer, expert: e.expert, part: part)
                        out[part] =
                            ["exact"]
                            + ExpertPrecision.variants.filter { withVariant[$0]?.contains(k) ?? false }.map(\.name)
                    }
                    return out
                }
                func row(_ t: TensorInfo) -> Tensor {
                    Tensor(
                        name: t.name, dtype: displayName(t.dtype), shape: t.shape, codec: t.codec, raw_bytes: t.rawSize,
                        stored_bytes: t.storedSize)
                }
                let big = ts.sorted { ($0.rawSize, $1.name) > ($1.rawSize, $0.name) }.prefix(max(0, largest)).map(row)
                models.append(
                    Model(
                        name: name, layers: info?.layers, experts_per_layer: info?.expertsPerLayer, top_k: info?.topK,
                        sources: info?.sources ?? [], metadata_keys: info?.extra.count ?? 0, tensor_count: ts.count,
                        raw_bytes: ts.reduce(0) { $0 + $1.rawSize }, stored_bytes: ts.reduce(0) { $0 + $1.storedSize },
                        experts_indexed: ex.count,
                        by_dtype_codec: groups.values.sorted { ($0.dtype, $0.codec) < ($1.dtype, $1.codec) },
                        expert_layers: layers.values.sorted { $0.layer < $1.layer },
                        largest: Array(big),
                        tensors: listTensors ? ts.map(row) : nil,
                        experts: listExperts
                            ? ex.map {
                                Expert(
                                    layer: $0.layer, expert: $0.expert,
                                    shared: $0.expert >= ExpertNaming.sharedExpertBase, parts: $0.parts,
                                    precisions: precisionsOf($0))
                            } : nil,
                        expert_precisions: precisions,
                        parts_without_variants: noVariant.map { NoVariant(reason: $0.key, parts: $0.value) }
                            .sorted { $0.reason < $1.reason }))
            }
        }
        return InspectReport(
            store: path, format_version: meta.formatVersion, created_by: meta.createdBy, created: meta.created,
            models: models)
    }

    /// The human form: a summary line per model, then tables.
    var text: String {
        var out = ["store \(store): format v\(format_version), created by \(created_by) at \(created)"]
        for m in models {
            out.append("")
            out.append(
                "model \(m.name): \(m.tensor_count) tensors, \(formatBytes(m.raw_bytes)) raw, \(formatBytes(m.stored_bytes)) stored (\(formatRatio(raw: m.raw_bytes, stored: m.stored_bytes)))"
            )
            let moe = [
                m.layers.map { "\($0) layers" }, m.experts_per_layer.map { "\($0) experts per layer" },
                m.top_k.map { "top-\($0)" },
            ].compactMap { $0 }
            if !moe.isEmpty || m.experts_indexed > 0 {
                out.append("  " + (moe + ["\(m.experts_indexed) experts indexed"]).joined(separator: ", "))
            }
            if !m.sources.isEmpty { out.append("  from " + m.sources.joined(separator: ", ")) }
            if m.metadata_keys > 0 { out.append("  \(m.metadata_keys) metadata entries kept from the source") }
            out.append("")
            var g = TextTable("dtype", "codec", "tensors", "raw", "stored", "ratio")
            for x in m.by_dtype_codec {
                g.add(
                    x.dtype, x.codec, "\(x.tensors)", formatBytes(x.raw_bytes), formatBytes(x.stored_bytes),
                    formatRatio(raw: x.raw_bytes, stored: x.stored_bytes))
            }
            out.append(g.render(indent: "  "))
            if !m.expert_layers.isEmpty {
                out.append("")
                var l = TextTable("layer", "experts", "shared", "tensors", "raw", "stored", "ratio")
                for x in m.expert_layers {
                    l.add(
                        "\(x.layer)", "\(x.experts)", "\(x.shared_experts)", "\(x.expert_tensors)",
                        formatBytes(x.raw_bytes),
                        formatBytes(x.stored_bytes), formatRatio(raw: x.raw_bytes, stored: x.stored_bytes))
                }
                out.append(l.render(indent: "  "))
            }
            if m.expert_precisions.count > 1 {
                out.append("")
                var t = TextTable("expert precision", "parts", "raw", "stored", "of exact")
                for x in m.expert_precisions {
                    t.add(
                        x.precision, "\(x.parts)", formatBytes(x.raw_bytes), formatBytes(x.stored_bytes),
                        String(format: "%.1f%%", x.share_of_exact * 100))
                }
                out.append(t.render(indent: "  "))
                for x in m.parts_without_variants { out.append("  \(x.parts) parts without variants: \(x.reason)") }
            }
            func tensorTable(_ title: String, _ ts: [Tensor]) {
                guard !ts.isEmpty else { return }
                out.append("")
                out.append("  \(title):")
                var t = TextTable("tensor", "dtype", "shape", "codec", "raw", "stored", "ratio")
                for x in ts {
                    t.add(
                        x.name, x.dtype, "[" + x.shape.map(String.init).joined(separator: ", ") + "]", x.codec,
                        formatBytes(x.raw_bytes), formatBytes(x.stored_bytes),
                        formatRatio(raw: x.raw_bytes, stored: x.stored_bytes))
                }
                out.append(t.render(indent: "  "))
            }
            tensorTable("largest tensors", m.largest)
            if let ts = m.tensors { tensorTable("all tensors", ts) }
            if let ex = m.experts, !ex.isEmpty {
                out.append("")
                var t = TextTable("layer", "expert", "part", "tensor", "precisions")
                for e in ex {
                    for (part, tensor) in e.parts.sorted(by: { $0.key < $1.key }) {
                        let label = e.shared ? "shared \(e.expert - ExpertNaming.sharedExpertBase)" : "\(e.expert)"
                        t.add(
                            "\(e.layer)", label, part, tensor, (e.precisions[part] ?? ["exact"]).joined(separator: ","))
                    }
                }
                out.append(t.render(indent: "  "))
            }
        }
        return out.joined(separator: "\n")
    }
}

/// A dtype as inspect shows it: the wstore name, or `ggml:Q4_K` for opaque GGUF blocks.
func displayName(_ d: DType) -> String {
    if case .ggml(let id) = d { return "ggml:" + (GGMLType.byID(id)?.name ?? "\(id)") }
    return "\(d)"
}

import Foundation
import WStoreCore

/// Recognises MoE expert tensors by name (format-spec/IMPORT-EXPORT.md §2):
/// Mixtral `…layers.N.block_sparse_moe.experts.E.w1|w2|w3.*`, Qwen-MoE / DeepSeek / OLMoE
/// `…layers.N.mlp.experts.E.gate_proj|up_proj|down_proj.*`, shared experts
/// `…layers.N.mlp.shared_expert(s).*_proj.*`, GGUF `blk.N.ffn_gate|up|down.E.*` and
/// `blk.N.ffn_*_shexp.*`, plus the rules of an optional JSON mapping file, tried first.
public struct ExpertNaming: Sendable {
    /// Shared experts are indexed at expert number `sharedExpertBase + s` (s counts
    /// the layer's shared experts from 0), apart from the routed experts `0..<E`.
    public static let sharedExpertBase = 65536

    /// What a tensor name says about its expert.
    public struct Match: Sendable, Hashable {
        /// The (layer, expert, part) it is indexed as.
        public var key: ExpertKey
        /// Whether it is a shared (always-active) expert.
        public var shared: Bool
    }

    /// A GGUF tensor holding every expert of one layer and part, stacked outermost.
    public struct Stacked: Sendable, Hashable {
        /// The transformer layer.
        public var layer: Int
        /// `gate`, `up` or `down` (with `.suffix` when the tensor is not `.weight`).
        public var part: String
        /// The name of expert `e`'s slice: `blk.N.ffn_gate.E.weight` for `blk.N.ffn_gate_exps.weight`.
        public var perExpertName: @Sendable (Int) -> String

        /// Equal when layer and part are.
        public static func == (a: Stacked, b: Stacked) -> Bool { a.layer == b.layer && a.part == b.part }
        /// Hashes layer and part.
        public func hash(into h: inout Hasher) {
            h.combine(layer)
            h.combine(part)
        }
    }

    private let rules: [MappingRule]

    /// The built-in rules only.
    public init() { rules = [] }

    /// The built-in rules and those of the mapping file at `mappingFile`, tried first.
    /// - Throws: ``ImportError`` when the file is missing, not JSON of the documented
    ///   shape, or holds a pattern that does not compile or lacks a needed group.
    public init(mappingFile: String) throws(ImportError) {
        guard let data = FileManager.default.contents(atPath: mappingFile) else {
            throw ImportError(file: mappingFile, "cannot read the expert mapping file")
        }
        struct File: Decodable {
            struct Rule: Decodable {
                var pattern: String
                var part: String?
                var parts: [String: String]?
                var shared: Bool?
            }
            var rules: [Rule]
        }
        let file: File
        do { file = try JSONDecoder().decode(File.self, from: data) } catch {
            throw ImportError(file: mappingFile, "not a mapping file ({\"rules\": [{\"pattern\": …}]}): \(error)")
        }
        var out: [MappingRule] = []
        for (i, r) in file.rules.enumerated() {
            let regex: NSRegularExpression
            do { regex = try NSRegularExpression(pattern: r.pattern) } catch {
                throw ImportError(file: mappingFile, "rule \(i): pattern does not compile: \(r.pattern.quoted)")
            }
            func has(_ group: String) -> Bool { r.pattern.contains("(?<\(group)>") }
            guard has("layer") else {
                throw ImportError(file: mappingFile, "rule \(i): pattern has no (?<layer>…) group")
            }
            guard r.shared == true || has("expert") else {
                throw ImportError(
                    file: mappingFile, "rule \(i): pattern has no (?<expert>…) group and the rule is not shared")
            }
            guard r.part != nil || has("part") else {
                throw ImportError(file: mappingFile, "rule \(i): neither a (?<part>…) group nor a \"part\"")
            }
            out.append(
                MappingRule(
                    regex: UncheckedRegex(regex), part: r.part, parts: r.parts ?? [:], shared: r.shared ?? false))
        }
        rules = out
    }

    /// The expert `name` belongs to, or `nil` when it is not an expert tensor.
    public func match(_ name: String) -> Match? {
        for rule in rules {
            if let m = rule.match(name) { return m }
        }
        return Self.builtIn(name)
    }

    /// If `name` is a stacked GGUF expert tensor (`blk.N.ffn_gate_exps.weight`), what it holds.
    public func stacked(_ name: String) -> Stacked? {
        let c = name.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard c.count >= 4, c[0] == "blk", let layer = Int(c[1]), layer >= 0 else { return nil }
        for p in ["gate", "up", "down"] where c[2] == "ffn_\(p)_exps" {
            let suffix = c[3...].joined(separator: ".")
            return Stacked(
                layer: layer, part: Self.part(p, suffix),
                perExpertName: { e in "blk.\(layer).ffn_\(p).\(e).\(suffix)" })
        }
        return nil
    }

    /// The transformer layer a tensor name belongs to (`layers.N.` or `blk.N.`), if any.
    public static func layer(of name: String) -> Int? {
        let c = name.split(separator: ".")
        for i in 0 ..< max(0, c.count - 1) where c[i] == "layers" || c[i] == "blk" || c[i] == "h" {
            if let l = Int(c[i + 1]), l >= 0 { return l }
        }
        return nil
    }

    private static func part(_ base: String, _ suffix: String) -> String {
        suffix == "weight" ? base : base + "." + suffix
    }

    private static func builtIn(_ name: String) -> Match? {
        let c = name.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        // GGUF: blk.N.ffn_gate.E.weight (per expert), blk.N.ffn_gate_shexp.weight (shared).
        if c.count >= 4, c[0] == "blk", let layer = Int(c[1]), layer >= 0 {
            for p in ["gate", "up", "down"] {
                if c[2] == "ffn_\(p)", c.count >= 5, let e = Int(c[3]), e >= 0 {
                    return Match(
                        key: ExpertKey(layer: layer, expert: e, part: part(p, c[4...].joined(separator: "."))),
                        shared: false)
                }
                if c[2] == "ffn_\(p)_shexp" {
                    return Match(
                        key: ExpertKey(
                            layer: layer, expert: sharedExpertBase, part: part(p, c[3...].joined(separator: "."))),
                        shared: true)
                }
            }
            return nil
        }
        guard let i = c.firstIndex(of: "layers"), i + 2 < c.count, let layer = Int(c[i + 1]), layer >= 0 else {
            return nil
        }
        let r = Array(c[(i + 2)...])
        let mixtral = ["w1": "gate", "w3": "up", "w2": "down"]
        let proj = ["gate_proj": "gate", "up_proj": "up", "down_proj": "down"]
        // Mixtral: block_sparse_moe.experts.E.w1|w2|w3.*
        if r.count >= 5, r[0] == "block_sparse_moe", r[1] == "experts", let e = Int(r[2]), e >= 0, let p = mixtral[r[3]]
        {
            return Match(
                key: ExpertKey(layer: layer, expert: e, part: part(p, r[4...].joined(separator: "."))), shared: false)
        }
        // Qwen-MoE, DeepSeek, OLMoE: mlp.experts.E.gate_proj|up_proj|down_proj.*
        if r.count >= 5, r[0] == "mlp", r[1] == "experts", let e = Int(r[2]), e >= 0, let p = proj[r[3]] {
            return Match(
                key: ExpertKey(layer: layer, expert: e, part: part(p, r[4...].joined(separator: "."))), shared: false)
        }
        // Shared experts: mlp.shared_expert.*_proj.* (Qwen-MoE), mlp.shared_experts.*_proj.* (DeepSeek).
        if r.count >= 4, r[0] == "mlp", r[1] == "shared_expert" || r[1] == "shared_experts", let p = proj[r[2]] {
            return Match(
                key: ExpertKey(layer: layer, expert: sharedExpertBase, part: part(p, r[3...].joined(separator: "."))),
                shared: true)
        }
        return nil
    }

    private struct MappingRule: Sendable {
        let regex: UncheckedRegex
        let part: String?
        let parts: [String: String]
        let shared: Bool

        func match(_ name: String) -> Match? {
            let ns = name as NSString
            guard let m = regex.value.firstMatch(in: name, range: NSRange(location: 0, length: ns.length)) else {
                return nil
            }
            func group(_ g: String) -> String? {
                let r = m.range(withName: g)
                return r.location == NSNotFound ? nil : ns.substring(with: r)
            }
            guard let layer = group("layer").flatMap({ Int($0) }), layer >= 0 else { return nil }
            let expert: Int
            if shared {
                let s = group("expert").flatMap { Int($0) } ?? 0
                guard s >= 0, s < ExpertNaming.sharedExpertBase else { return nil }
                expert = ExpertNaming.sharedExpertBase + s
            } else {
                guard let e = group("expert").flatMap({ Int($0) }), e >= 0, e < ExpertNaming.sharedExpertBase else {
                    return nil
                }
                expert = e
            }
            guard let raw = part ?? group("part") else { return nil }
            return Match(key: ExpertKey(layer: layer, expert: expert, part: parts[raw] ?? raw), shared: shared)
        }
    }
}

/// NSRegularExpression is immutable and documented thread-safe for matching.
private struct UncheckedRegex: @unchecked Sendable {
    let value: NSRegularExpression
    init(_ v: NSRegularExpression) { value = v }
}

// Types the store, the importers and the replay tools all name: they live in the
// storage core so each of those modules can use them without depending on another.

/// Addresses one part of one MoE expert: `(layer, expert, part)`, part being e.g.
/// `gate`, `up` or `down`.
public struct ExpertKey: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var layer: Int
    public var expert: Int
    public var part: String

    public init(layer: Int, expert: Int, part: String) {
        self.layer = layer
        self.expert = expert
        self.part = part
    }

    public static func < (a: ExpertKey, b: ExpertKey) -> Bool {
        (a.layer, a.expert, a.part) < (b.layer, b.expert, b.part)
    }

    public var description: String { "layer \(layer) expert \(expert) \(part)" }
}

/// The model-level facts a store keeps per model namespace.
public struct ModelInfo: Codable, Sendable, Hashable {
    public var name: String
    /// Transformer layers, when known.
    public var layers: Int?
    /// Routed experts per MoE layer, when known.
    public var expertsPerLayer: Int?
    /// Experts each token is routed to, when known.
    public var topK: Int?
    /// The files the model was packed from.
    public var sources: [String]
    /// Free-form facts kept from the source (e.g. GGUF metadata), as text.
    public var extra: [String: String]

    public init(
        name: String, layers: Int? = nil, expertsPerLayer: Int? = nil, topK: Int? = nil,
        sources: [String] = [], extra: [String: String] = [:]
    ) {
        self.name = name
        self.layers = layers
        self.expertsPerLayer = expertsPerLayer
        self.topK = topK
        self.sources = sources
        self.extra = extra
    }

    enum CodingKeys: String, CodingKey {
        case name, layers, sources, extra
        case expertsPerLayer = "experts_per_layer"
        case topK = "top_k"
    }
}

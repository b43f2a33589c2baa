import WStoreCore

/// What the store knows of one tensor, read from its record header.
public struct TensorInfo: Sendable, Hashable {
    public let model: String
    public let name: String
    public let dtype: DType
    /// Dimensions, outermost first (C order).
    public let shape: [Int]
    /// `raw` (readable zero-copy) or `zstd`.
    public let codec: String
    /// Bytes of the tensor itself.
    public let rawSize: Int
    /// Bytes of its stored payload.
    public let storedSize: Int
    /// xxh3-64 of the raw bytes.
    public let checksum: UInt64
    /// Independent compressed frames (0 for raw records).
    public let frameCount: Int

    /// `true` when ``WeightStore/withTensor(_:model:verify:_:)`` can lend the bytes in place.
    public var isRaw: Bool { codec == "raw" }

    init(model: String, name: String, record r: RecordView) {
        self.model = model
        self.name = name
        self.dtype = r.dtype
        self.shape = r.shape
        self.codec = r.codec.name
        self.rawSize = r.rawSize
        self.storedSize = r.storedSize
        self.checksum = r.checksum
        self.frameCount = r.frameCount
    }
}

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

/// One expert of one layer and the tensors that make it up.
public struct ExpertEntry: Sendable, Hashable {
    public let layer: Int
    public let expert: Int
    /// Part name → tensor name, e.g. `"gate": "model.layers.0.mlp.experts.3.gate_proj.weight"`.
    public let parts: [String: String]
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

    public init(name: String, layers: Int? = nil, expertsPerLayer: Int? = nil, topK: Int? = nil,
                sources: [String] = [], extra: [String: String] = [:]) {
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

/// The store-level metadata record.
public struct StoreMetadata: Codable, Sendable, Hashable {
    /// The store format version (format-spec/FORMAT.md).
    public var formatVersion: Int
    /// The wstore version that created the store.
    public var createdBy: String
    /// When the store was created, ISO 8601.
    public var created: String

    enum CodingKeys: String, CodingKey {
        case formatVersion = "format_version"
        case createdBy = "created_by"
        case created
    }
}

/// The version of this wstore build.
public let wstoreVersion = "0.1.0"

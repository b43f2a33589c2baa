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
        self.frameCount = r.codec == .zstd ? r.frameCount : 0  // zstd frames; a raw record's checked blocks are not frames
    }
}

/// One expert of one layer and the tensors that make it up.
public struct ExpertEntry: Sendable, Hashable {
    public let layer: Int
    public let expert: Int
    /// Part name → tensor name, e.g. `"gate": "model.layers.0.mlp.experts.3.gate_proj.weight"`.
    public let parts: [String: String]
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

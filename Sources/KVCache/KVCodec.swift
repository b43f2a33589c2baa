/// How a KV chunk is compressed.
public enum KVCodec: String, Sendable, CaseIterable, Equatable {
    /// Byte-grouped zstd, the codec of weights: exact.
    case lossless
    /// The bytes as they are, no compression (as LMCache's default serde): exact, the
    /// fastest lookup, the largest store. Stores with this codec are format version 2.
    case raw
    /// KIVI-style 8-bit quantization, then zstd.
    case int8
    /// KIVI-style 4-bit quantization, then zstd.
    case int4
    /// KIVI-style 2-bit quantization, then zstd.
    case int2

    /// Bits per quantized element; `nil` for ``lossless``.
    public var bits: Int? {
        switch self {
        case .lossless, .raw: nil
        case .int8: 8
        case .int4: 4
        case .int2: 2
        }
    }

    /// The code stored in a chunk header (format-spec/KV.md).
    package var code: UInt8 {
        switch self {
        case .lossless: 0
        case .raw: 1
        case .int8: 8
        case .int4: 4
        case .int2: 2
        }
    }

    /// The codec of a chunk-header code, if known.
    package init?(code: UInt8) {
        guard let c = KVCodec.allCases.first(where: { $0.code == code }) else { return nil }
        self = c
    }
}

/// Quantization knobs (KIVI, arXiv 2402.02750).
public struct KIVIOptions: Sendable, Equatable {
    /// Elements per quantization group: tokens per group for keys (per channel), channels per group for values (per token).
    public var group: Int = 64
    /// The newest tokens of each tensor kept in full precision.
    public var residual: Int = 0

    /// Group 64, no residual.
    public init(group: Int = 64, residual: Int = 0) {
        self.group = group
        self.residual = residual
    }
}

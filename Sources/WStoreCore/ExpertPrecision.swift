/// The precision of one stored copy of an expert part.
public enum ExpertPrecision: String, Sendable, Hashable, CaseIterable {
    /// The lossless record.
    case exact
    /// GGUF Q8_0 blocks.
    case q8_0
    /// GGUF Q4_0 blocks.
    case q4_0
}

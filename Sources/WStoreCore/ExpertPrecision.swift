/// The precision of one stored copy of an expert part: the lossless record, or a quantized
/// variant stored beside it (format-spec/FORMAT.md §8).
///
/// Ordered by fidelity: `q4_0 < q8_0 < exact`.
public enum ExpertPrecision: String, Sendable, Hashable, CaseIterable, Comparable, CustomStringConvertible, Codable {
    /// The lossless record, in the part's own dtype.
    case exact
    /// GGML `Q8_0` blocks (``DType/q8_0``): 8.5 bits per element.
    case q8_0
    /// GGML `Q4_0` blocks (``DType/q4_0``): 4.5 bits per element.
    case q4_0

    /// The quantized precisions, finest first.
    public static let variants: [ExpertPrecision] = [.q8_0, .q4_0]

    /// The name stored in keys and shown to users (`exact`, `q8_0`, `q4_0`).
    public var name: String { rawValue }

    public var description: String { rawValue }

    /// The precision named `name`, accepting the aliases `int8` (`q8_0`) and `int4` (`q4_0`);
    /// `nil` for anything else.
    public init?(name: String) {
        switch name.lowercased() {
        case "exact", "lossless": self = .exact
        case "q8_0", "int8": self = .q8_0
        case "q4_0", "int4": self = .q4_0
        default: return nil
        }
    }

    /// Parses a comma-separated list of quantized precisions (`q8_0,q4_0`, `int8,int4`), in the
    /// given order, without duplicates.
    /// - Throws: ``WStoreError/invalidArgument(_:)`` naming the first value that is not a
    ///   quantized precision (including `exact`, which is always stored), or an empty list.
    public static func parseVariants(_ list: String) throws(WStoreError) -> [ExpertPrecision] {
        var out: [ExpertPrecision] = []
        guard list.contains(where: { !$0.isWhitespace }) else {
            throw .invalidArgument("--expert-variants needs at least one of q8_0, q4_0")
        }
        for raw in list.split(separator: ",", omittingEmptySubsequences: false) {
            let item = String(raw.filter { !$0.isWhitespace })
            guard let p = ExpertPrecision(name: item), p != .exact else {
                throw .invalidArgument(
                    "unknown expert variant '\(item)': use q8_0 (int8) or q4_0 (int4), comma-separated")
            }
            if !out.contains(p) { out.append(p) }
        }
        return out
    }

    /// The dtype of a variant's record; `nil` for ``exact``, whose record keeps the part's dtype.
    public var blockDType: DType? {
        switch self {
        case .exact: nil
        case .q8_0: .q8_0
        case .q4_0: .q4_0
        }
    }

    /// Bits per element of a variant (scales included); `nil` for ``exact``.
    public var bitsPerElement: Double? {
        guard let (per, bytes) = blockDType?.blockLayout else { return nil }
        return Double(bytes * 8) / Double(per)
    }

    private var fidelity: Int {
        switch self {
        case .q4_0: 0
        case .q8_0: 1
        case .exact: 2
        }
    }

    /// Fidelity order: a coarser precision is smaller.
    public static func < (a: ExpertPrecision, b: ExpertPrecision) -> Bool { a.fidelity < b.fidelity }
}

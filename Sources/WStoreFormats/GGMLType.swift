import WStoreCore

/// A ggml tensor type as GGUF records it: its id, name and block layout.
public struct GGMLType: Sendable, Hashable, CustomStringConvertible {
    /// The type id in the GGUF tensor info.
    public let id: UInt32
    /// The ggml name (`F32`, `Q4_0`, `Q6_K`, ...).
    public let name: String
    /// Elements per block (1 for plain types).
    public let blockSize: Int
    /// Bytes per block.
    public let typeSize: Int

    /// The ggml name.
    public var description: String { name }

    /// The wstore dtype a tensor of this type is stored as: a plain dtype for plain
    /// types, opaque ``DType/ggml(_:)`` blocks for quantized ones.
    public var dtype: DType {
        switch id {
        case 0: .f32
        case 1: .f16
        case 24: .i8
        case 25: .i16
        case 26: .i32
        case 27: .i64
        case 28: .f64
        case 30: .bf16
        default: .ggml(id)
        }
    }

    /// Bytes of a tensor with `elementsInRow` elements along its fastest dimension and
    /// `rows` rows; `nil` when the row is not a whole number of blocks or it overflows.
    public func byteCount(elementsInRow: Int, rows: Int) -> Int? {
        guard elementsInRow % blockSize == 0 else { return nil }
        let (a, o1) = (elementsInRow / blockSize).multipliedReportingOverflow(by: typeSize)
        let (b, o2) = a.multipliedReportingOverflow(by: rows)
        return o1 || o2 ? nil : b
    }

    /// The type with id `id`, if ggml defines it.
    public static func byID(_ id: UInt32) -> GGMLType? { table[id] }

    /// Every type id of ggml (ids 4, 5, 31–33 and 36–38 were removed from ggml and are not valid).
    public static let all: [GGMLType] = [
        .init(id: 0, name: "F32", blockSize: 1, typeSize: 4),
        .init(id: 1, name: "F16", blockSize: 1, typeSize: 2),
        .init(id: 2, name: "Q4_0", blockSize: 32, typeSize: 18),
        .init(id: 3, name: "Q4_1", blockSize: 32, typeSize: 20),
        .init(id: 6, name: "Q5_0", blockSize: 32, typeSize: 22),
        .init(id: 7, name: "Q5_1", blockSize: 32, typeSize: 24),
        .init(id: 8, name: "Q8_0", blockSize: 32, typeSize: 34),
        .init(id: 9, name: "Q8_1", blockSize: 32, typeSize: 40),
        .init(id: 10, name: "Q2_K", blockSize: 256, typeSize: 84),
        .init(id: 11, name: "Q3_K", blockSize: 256, typeSize: 110),
        .init(id: 12, name: "Q4_K", blockSize: 256, typeSize: 144),
        .init(id: 13, name: "Q5_K", blockSize: 256, typeSize: 176),
        .init(id: 14, name: "Q6_K", blockSize: 256, typeSize: 210),
        .init(id: 15, name: "Q8_K", blockSize: 256, typeSize: 292),
        .init(id: 16, name: "IQ2_XXS", blockSize: 256, typeSize: 66),
        .init(id: 17, name: "IQ2_XS", blockSize: 256, typeSize: 74),
        .init(id: 18, name: "IQ3_XXS", blockSize: 256, typeSize: 98),
        .init(id: 19, name: "IQ1_S", blockSize: 256, typeSize: 50),
        .init(id: 20, name: "IQ4_NL", blockSize: 32, typeSize: 18),
        .init(id: 21, name: "IQ3_S", blockSize: 256, typeSize: 110),
        .init(id: 22, name: "IQ2_S", blockSize: 256, typeSize: 82),
        .init(id: 23, name: "IQ4_XS", blockSize: 256, typeSize: 136),
        .init(id: 24, name: "I8", blockSize: 1, typeSize: 1),
        .init(id: 25, name: "I16", blockSize: 1, typeSize: 2),
        .init(id: 26, name: "I32", blockSize: 1, typeSize: 4),
        .init(id: 27, name: "I64", blockSize: 1, typeSize: 8),
        .init(id: 28, name: "F64", blockSize: 1, typeSize: 8),
        .init(id: 29, name: "IQ1_M", blockSize: 256, typeSize: 56),
        .init(id: 30, name: "BF16", blockSize: 1, typeSize: 2),
        .init(id: 34, name: "TQ1_0", blockSize: 256, typeSize: 54),
        .init(id: 35, name: "TQ2_0", blockSize: 256, typeSize: 66),
        .init(id: 39, name: "MXFP4", blockSize: 32, typeSize: 17),
        .init(id: 40, name: "NVFP4", blockSize: 64, typeSize: 36),
        .init(id: 41, name: "Q1_0", blockSize: 128, typeSize: 18),
    ]

    private static let table: [UInt32: GGMLType] = Dictionary(uniqueKeysWithValues: all.map { ($0.id, $0) })
}

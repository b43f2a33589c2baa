/// The element type of a tensor.
///
/// The raw value is the dtype code in the record header (format-spec/FORMAT.md).
/// Quantized GGUF tensors are stored as opaque blocks: ``ggml`` with the GGUF type id
/// kept beside it in the header.
public enum DType: Hashable, Sendable, CustomStringConvertible {
    case bool, u8, i8, i16, u16, i32, u32, i64, u64
    case f16, bf16, f32, f64
    case f8e4m3, f8e5m2, f8e8m0
    case c64
    case f8e4m3fnuz, f8e5m2fnuz
    /// Sub-byte floats, packed with no padding between elements (safetensors `F4`,
    /// `F6_E2M3`, `F6_E3M2`): a tensor of n elements takes ceil(n × bits / 8) bytes.
    case f4, f6e2m3, f6e3m2
    /// Opaque quantized blocks of the GGUF/ggml type with this id.
    case ggml(UInt32)

    /// Every element type of whole bytes per element.
    public static let allPlain: [DType] = [
        .bool, .u8, .i8, .i16, .u16, .i32, .u32, .i64, .u64,
        .f16, .bf16, .f32, .f64, .f8e4m3, .f8e5m2, .f8e8m0, .c64, .f8e4m3fnuz, .f8e5m2fnuz,
    ]

    /// Element types of fewer than 8 bits, packed.
    public static let allSubByte: [DType] = [.f4, .f6e2m3, .f6e3m2]

    /// Every dtype with a fixed bit width, indexed by code (0 ..< 22).
    private static let byCode: [DType] = [
        .bool, .u8, .i8, .i16, .u16, .i32, .u32, .i64, .u64,
        .f16, .bf16, .f32, .f64, .f8e4m3, .f8e5m2, .f8e8m0, .c64,
        .f8e4m3fnuz, .f8e5m2fnuz, .f4, .f6e2m3, .f6e3m2,
    ]

    /// The dtype code stored in the record header.
    public var code: UInt8 {
        switch self {
        case .bool: 0
        case .u8: 1
        case .i8: 2
        case .i16: 3
        case .u16: 4
        case .i32: 5
        case .u32: 6
        case .i64: 7
        case .u64: 8
        case .f16: 9
        case .bf16: 10
        case .f32: 11
        case .f64: 12
        case .f8e4m3: 13
        case .f8e5m2: 14
        case .f8e8m0: 15
        case .c64: 16
        case .f8e4m3fnuz: 17
        case .f8e5m2fnuz: 18
        case .f4: 19
        case .f6e2m3: 20
        case .f6e3m2: 21
        case .ggml: 255
        }
    }

    /// Decodes a header's dtype code (and GGUF type id for code 255); `nil` if unknown.
    public init?(code: UInt8, ggmlType: UInt32) {
        if code == 255 {
            self = .ggml(ggmlType)
            return
        }
        guard Int(code) < DType.byCode.count else { return nil }
        self = DType.byCode[Int(code)]
    }

    /// Bytes per element; `nil` for sub-byte types and opaque quantized blocks.
    public var elementSize: Int? {
        guard let bits = bitWidth, bits % 8 == 0 else { return nil }
        return bits / 8
    }

    /// Bits per element; `nil` for opaque quantized blocks.
    public var bitWidth: Int? {
        switch self {
        case .bool, .u8, .i8, .f8e4m3, .f8e5m2, .f8e8m0, .f8e4m3fnuz, .f8e5m2fnuz: 8
        case .i16, .u16, .f16, .bf16: 16
        case .i32, .u32, .f32: 32
        case .i64, .u64, .f64, .c64: 64
        case .f4: 4
        case .f6e2m3, .f6e3m2: 6
        case .ggml: nil
        }
    }

    /// Bytes a tensor of `elements` elements takes (sub-byte types rounded up to a
    /// whole byte); `nil` for opaque quantized blocks or on overflow.
    public func byteCount(elements: Int) -> Int? {
        guard let bits = bitWidth else { return nil }
        let (total, o) = elements.multipliedReportingOverflow(by: bits)
        return o ? nil : (total + 7) / 8
    }

    /// The safetensors name of this dtype (`BF16`, `F8_E4M3`, ...); `nil` for GGUF blocks.
    public var safetensorsName: String? {
        switch self {
        case .bool: "BOOL"
        case .u8: "U8"
        case .i8: "I8"
        case .i16: "I16"
        case .u16: "U16"
        case .i32: "I32"
        case .u32: "U32"
        case .i64: "I64"
        case .u64: "U64"
        case .f16: "F16"
        case .bf16: "BF16"
        case .f32: "F32"
        case .f64: "F64"
        case .f8e4m3: "F8_E4M3"
        case .f8e5m2: "F8_E5M2"
        case .f8e8m0: "F8_E8M0"
        case .c64: "C64"
        case .f8e4m3fnuz: "F8_E4M3FNUZ"
        case .f8e5m2fnuz: "F8_E5M2FNUZ"
        case .f4: "F4"
        case .f6e2m3: "F6_E2M3"
        case .f6e3m2: "F6_E3M2"
        case .ggml: nil
        }
    }

    /// The dtype with this safetensors name, if wstore knows it.
    public init?(safetensorsName: String) {
        guard let d = DType.byCode.first(where: { $0.safetensorsName == safetensorsName }) else { return nil }
        self = d
    }

    public var description: String {
        switch self {
        case .ggml(let t): "ggml(\(t))"
        default: safetensorsName!.lowercased()
        }
    }

    /// GGML `Q8_0` blocks (ggml type 8): per 32 elements along the last dimension, an f16
    /// scale `d` then 32 int8 `q`; value = `q·d` (format-spec/FORMAT.md §8). Stored as code 255
    /// with type id 8, so every version-2 reader reads it.
    public static let q8_0 = DType.ggml(8)

    /// GGML `Q4_0` blocks (ggml type 2): per 32 elements along the last dimension, an f16
    /// scale `d` then 16 bytes, byte `j` holding element `j` in its low nibble and element
    /// `j + 16` in its high nibble; value = `(nibble − 8)·d` (format-spec/FORMAT.md §8).
    public static let q4_0 = DType.ggml(2)

    /// Elements and bytes per block for the block types wstore writes itself
    /// (``q8_0``, ``q4_0``); `nil` for every other dtype.
    public var blockLayout: (elements: Int, bytes: Int)? {
        switch self {
        case .ggml(8): (32, 34)
        case .ggml(2): (32, 18)
        default: nil
        }
    }

    /// Bytes of a tensor of this block type and logical element `shape` (C order, the blocks
    /// along the last dimension); `nil` for other dtypes, an empty shape, a last dimension that
    /// is not a whole number of blocks, or on overflow.
    public func blockByteCount(shape: [Int]) -> Int? {
        guard let (per, bytes) = blockLayout, let last = shape.last, last % per == 0 else { return nil }
        var elements = 1
        for d in shape {
            guard d >= 0 else { return nil }
            let (m, o) = elements.multipliedReportingOverflow(by: d)
            if o { return nil }
            elements = m
        }
        let (b, o) = (elements / per).multipliedReportingOverflow(by: bytes)
        return o ? nil : b
    }

    /// The byte-grouping transform that suits this dtype's bytes (see ``PlaneTransform``).
    package var preferredTransform: PlaneTransform {
        switch self {
        case .bf16: .rotateGroup2
        case .f16, .i16, .u16: .group2
        case .f32: .rotateGroup4
        case .i32, .u32: .group4
        default: .none
        }
    }
}

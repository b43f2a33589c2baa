import WStoreCore

/// One metadata value of a GGUF file.
public indirect enum GGUFValue: Sendable, Hashable, CustomStringConvertible {
    /// An unsigned integer (UINT8 to UINT64).
    case uint(UInt64)
    /// A signed integer (INT8 to INT64).
    case int(Int64)
    /// FLOAT32 or FLOAT64.
    case float(Double)
    /// BOOL.
    case bool(Bool)
    /// STRING (UTF-8).
    case string(String)
    /// ARRAY of one value type.
    case array([GGUFValue])

    /// The value as an integer, when it is a (fitting) number.
    public var intValue: Int? {
        switch self {
        case .uint(let v): v <= UInt64(Int.max) ? Int(v) : nil
        case .int(let v): Int(v)
        default: nil
        }
    }

    /// The value as text: numbers and strings as they are, arrays as JSON.
    public var description: String {
        switch self {
        case .uint(let v): "\(v)"
        case .int(let v): "\(v)"
        case .float(let v): "\(v)"
        case .bool(let v): "\(v)"
        case .string(let s): s
        case .array(let items): "[" + items.map(\.jsonText).joined(separator: ",") + "]"
        }
    }

    private var jsonText: String {
        guard case .string(let s) = self else { return description }
        return SafetensorsWriter.jsonString(s)
    }
}

/// One tensor listed in a GGUF file.
public struct GGUFTensor: Sendable, Hashable {
    /// The tensor's name.
    public let name: String
    /// Dimensions as GGUF lists them: fastest-varying first (`ne[0]` is the row length).
    public let dims: [Int]
    /// The ggml type.
    public let type: GGMLType
    /// Where the tensor's bytes are, as absolute offsets into the file.
    public let byteRange: Range<Int>
    /// Dimensions outermost first (C order), as wstore and safetensors list them.
    public var shape: [Int] { dims.reversed() }
}

/// A GGUF file (version 2 or 3), memory-mapped and validated as the reference reader
/// does: magic, version, counts and string lengths bounded by the file size, a
/// power-of-two alignment, tensor offsets aligned, in order and inside the data
/// section, sizes that are whole blocks of the tensor's type.
///
/// Sendable: share one across threads to read tensors in parallel.
public final class GGUFFile: Sendable {
    /// The file's path.
    public let path: String
    /// The format version (2 or 3).
    public let version: Int
    /// Every metadata key and value, in file order.
    public let metadata: [(key: String, value: GGUFValue)]
    /// Every tensor, in file order.
    public let tensors: [GGUFTensor]
    /// The data section's alignment.
    public let alignment: Int
    let file: MappedFile

    /// "GGUF" read as a little-endian u32.
    public static let magic: UInt32 = 0x4655_4747
    /// ggml's limit on a tensor's dimensions.
    public static let maxDims = 4

    /// The metadata value of `key`, if present.
    public func value(_ key: String) -> GGUFValue? { metadata.first { $0.key == key }?.value }

    /// Maps and validates the GGUF file at `path`.
    /// - Throws: ``ImportError`` naming the file and the first violation found.
    public convenience init(path: String) throws(ImportError) {
        try self.init(file: MappedFile(path: path))
    }

    /// Validates the GGUF bytes of `file`.
    /// - Throws: ``ImportError`` naming the file and the first violation found.
    package init(file: MappedFile) throws(ImportError) {
        let path = file.path
        self.path = path
        self.file = file
        var r = Reader(bytes: file.bytes, path: path)
        let magic = try r.u32("magic")
        guard magic == Self.magic else { throw ImportError(file: path, "not a GGUF file (bad magic)") }
        let v = try r.u32("version")
        guard v == 2 || v == 3 else {
            throw ImportError(file: path, "GGUF version \(v) is not supported (2 and 3 are)")
        }
        version = Int(v)
        let tensorCount = try r.u64("tensor count")
        let kvCount = try r.u64("metadata count")
        // Every metadata pair takes at least 12 bytes, every tensor info at least 24.
        guard kvCount <= UInt64(r.remaining / 12) else {
            throw ImportError(file: path, "metadata count \(kvCount) cannot fit in the file (\(file.size) bytes)")
        }
        guard tensorCount <= UInt64(r.remaining / 24) else {
            throw ImportError(file: path, "tensor count \(tensorCount) cannot fit in the file (\(file.size) bytes)")
        }
        var meta: [(key: String, value: GGUFValue)] = []
        var keys = Set<String>()
        for _ in 0 ..< Int(kvCount) {
            let key = try r.string("metadata key")
            guard keys.insert(key).inserted else {
                throw ImportError(file: path, "duplicate metadata key \(key.quoted)")
            }
            let type = try r.u32("type of metadata \(key.quoted)")
            meta.append((key, try r.value(type: type, key: key, depth: 0)))
        }
        metadata = meta
        var align = 32
        if let a = meta.first(where: { $0.key == "general.alignment" })?.value {
            guard case .uint(let av) = a, av > 0, av <= 1 << 30, av & (av - 1) == 0 else {
                throw ImportError(file: path, "general.alignment \(a) is not a power of two")
            }
            align = Int(av)
        }
        alignment = align
        var infos: [(name: String, dims: [Int], type: GGMLType, offset: Int, size: Int)] = []
        var names = Set<String>()
        for i in 0 ..< Int(tensorCount) {
            let name = try r.string("name of tensor \(i)")
            guard names.insert(name).inserted else {
                throw ImportError(file: path, "duplicate tensor name \(name.quoted)")
            }
            let nDims = try r.u32("dimension count of tensor \(name.quoted)")
            guard nDims >= 1, nDims <= UInt32(Self.maxDims) else {
                throw ImportError(
                    file: path, "tensor \(name.quoted) has \(nDims) dimensions (1 to \(Self.maxDims) allowed)")
            }
            var dims: [Int] = []
            var elements = 1
            for _ in 0 ..< Int(nDims) {
                let d = try r.u64("dimensions of tensor \(name.quoted)")
                guard d <= UInt64(Int.max) else {
                    throw ImportError(file: path, "tensor \(name.quoted) has dimension \(d), too large")
                }
                let (m, o) = elements.multipliedReportingOverflow(by: Int(d))
                guard !o else {
                    throw ImportError(file: path, "tensor \(name.quoted) has an element count that overflows")
                }
                elements = m
                dims.append(Int(d))
            }
            let typeID = try r.u32("type of tensor \(name.quoted)")
            guard let type = GGMLType.byID(typeID) else {
                throw ImportError(file: path, "tensor \(name.quoted) has unknown ggml type \(typeID)")
            }
            var rows = 1
            for d in dims.dropFirst() {
                let (m, o) = rows.multipliedReportingOverflow(by: d)
                guard !o else { throw ImportError(file: path, "tensor \(name.quoted) has a row count that overflows") }
                rows = m
            }
            guard dims[0] % type.blockSize == 0 else {
                throw ImportError(
                    file: path,
                    "tensor \(name.quoted) has row length \(dims[0]), not a multiple of the \(type.name) block size \(type.blockSize)"
                )
            }
            guard let size = type.byteCount(elementsInRow: dims[0], rows: rows) else {
                throw ImportError(file: path, "tensor \(name.quoted) has a byte size that overflows")
            }
            let offset = try r.u64("offset of tensor \(name.quoted)")
            guard offset <= UInt64(Int.max) else {
                throw ImportError(file: path, "tensor \(name.quoted) has offset \(offset), out of range")
            }
            infos.append((name, dims, type, Int(offset), size))
        }
        let dataStart = (r.at + align - 1) / align * align
        guard dataStart <= file.size else {
            throw ImportError(
                file: path,
                "the data section would start at \(dataStart), past the end of the file (\(file.size) bytes)")
        }
        let dataSize = file.size - dataStart
        var expected = 0
        var list: [GGUFTensor] = []
        for t in infos {
            guard t.offset % align == 0 else {
                throw ImportError(
                    file: path,
                    "tensor \(t.name.quoted) has offset \(t.offset), not a multiple of the alignment \(align)")
            }
            guard t.offset <= dataSize, t.size <= dataSize - t.offset else {
                throw ImportError(
                    file: path,
                    "tensor \(t.name.quoted) (\(t.size) bytes at offset \(t.offset)) runs past the end of the data section (\(dataSize) bytes)"
                )
            }
            guard t.offset == expected else {
                throw ImportError(
                    file: path,
                    "tensor \(t.name.quoted) has offset \(t.offset), expected \(expected) (tensors must follow each other)"
                )
            }
            expected = t.offset + (t.size + align - 1) / align * align
            list.append(
                GGUFTensor(
                    name: t.name, dims: t.dims, type: t.type,
                    byteRange: dataStart + t.offset ..< dataStart + t.offset + t.size))
        }
        tensors = list
    }

    /// Lends the bytes of `tensor` (one of ``tensors``), straight out of the mapping.
    /// - Warning: `bytes` is valid only inside `body`.
    public func withBytes<R, E: Error>(
        of tensor: GGUFTensor,
        _ body: (_ bytes: UnsafeRawBufferPointer) throws(E) -> R
    ) throws(E) -> R {
        try body(file.bytes(tensor.byteRange))
    }

    /// The bytes of `tensor`, valid as long as this file object lives (package use only).
    package func unsafeBytes(of tensor: GGUFTensor) -> UnsafeRawBufferPointer { file.bytes(tensor.byteRange) }

    /// A bounds-checked little-endian cursor over the file.
    private struct Reader {
        let bytes: UnsafeRawBufferPointer
        let path: String
        var at = 0
        var remaining: Int { bytes.count - at }

        func truncated(_ what: String) -> ImportError {
            ImportError(file: path, "truncated: the file ends inside the \(what) (at byte \(at) of \(bytes.count))")
        }

        mutating func take<T: FixedWidthInteger>(_ what: String, as: T.Type) throws(ImportError) -> T {
            guard remaining >= MemoryLayout<T>.size else { throw truncated(what) }
            let v = T(littleEndian: bytes.loadUnaligned(fromByteOffset: at, as: T.self))
            at += MemoryLayout<T>.size
            return v
        }

        mutating func u32(_ what: String) throws(ImportError) -> UInt32 { try take(what, as: UInt32.self) }
        mutating func u64(_ what: String) throws(ImportError) -> UInt64 { try take(what, as: UInt64.self) }

        mutating func string(_ what: String) throws(ImportError) -> String {
            let n = try u64("length of the \(what)")
            guard n <= UInt64(remaining) else {
                throw ImportError(file: path, "the \(what) claims \(n) bytes but only \(remaining) remain in the file")
            }
            let s = UnsafeRawBufferPointer(rebasing: bytes[at ..< at + Int(n)])
            at += Int(n)
            guard let str = String(validating: s, as: UTF8.self) else {
                throw ImportError(file: path, "the \(what) is not valid UTF-8")
            }
            return str
        }

        mutating func value(type: UInt32, key: String, depth: Int) throws(ImportError) -> GGUFValue {
            let what = "value of metadata \(key.quoted)"
            switch type {
            case 0: return .uint(UInt64(try take(what, as: UInt8.self)))
            case 1: return .int(Int64(try take(what, as: Int8.self)))
            case 2: return .uint(UInt64(try take(what, as: UInt16.self)))
            case 3: return .int(Int64(try take(what, as: Int16.self)))
            case 4: return .uint(UInt64(try take(what, as: UInt32.self)))
            case 5: return .int(Int64(try take(what, as: Int32.self)))
            case 6: return .float(Double(Float(bitPattern: try take(what, as: UInt32.self))))
            case 7:
                let b = try take(what, as: UInt8.self)
                guard b <= 1 else { throw ImportError(file: path, "metadata \(key.quoted) has boolean byte \(b)") }
                return .bool(b == 1)
            case 8: return .string(try string(what))
            case 9:
                guard depth == 0 else { throw ImportError(file: path, "metadata \(key.quoted) nests arrays") }
                let itemType = try u32("array type of metadata \(key.quoted)")
                let count = try u64("array length of metadata \(key.quoted)")
                let minSize: UInt64 =
                    switch itemType {
                    case 0, 1, 7: 1
                    case 2, 3: 2
                    case 4, 5, 6: 4
                    case 8, 10, 11, 12: 8
                    default:
                        throw ImportError(file: path, "metadata \(key.quoted) has an array of unknown type \(itemType)")
                    }
                guard count <= UInt64(remaining) / minSize else {
                    throw ImportError(
                        file: path, "metadata \(key.quoted) claims \(count) array items, more than the file can hold")
                }
                var items: [GGUFValue] = []
                items.reserveCapacity(Int(count))
                for _ in 0 ..< Int(count) { items.append(try value(type: itemType, key: key, depth: depth + 1)) }
                return .array(items)
            case 10: return .uint(try take(what, as: UInt64.self))
            case 11: return .int(try take(what, as: Int64.self))
            case 12: return .float(Double(bitPattern: try take(what, as: UInt64.self)))
            default: throw ImportError(file: path, "metadata \(key.quoted) has unknown value type \(type)")
            }
        }
    }
}

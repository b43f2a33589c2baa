import WStoreCore

/// One tensor listed in a safetensors header.
public struct SafetensorsTensor: Sendable, Hashable {
    /// The tensor's name.
    public let name: String
    /// The dtype as the header spells it (`BF16`, `F8_E4M3`, ...).
    public let dtypeName: String
    /// The wstore dtype, `nil` when wstore cannot store this dtype.
    public let dtype: DType?
    /// Dimensions, outermost first (C order).
    public let shape: [Int]
    /// Where the tensor's bytes are, as absolute offsets into the file.
    public let byteRange: Range<Int>
    /// Bytes of the tensor.
    public var byteCount: Int { byteRange.count }
}

/// A safetensors file, memory-mapped and validated as the reference reader does:
/// header length within the file and at most 100 MB, a JSON object header, known
/// dtypes, offsets inside the data section, contiguous and without overlaps or gaps,
/// sizes equal to element count × dtype size, no duplicate names.
///
///     let f = try SafetensorsFile(path: "model.safetensors")
///     for t in f.tensors { f.withBytes(of: t) { bytes in use(t.name, t.dtype, t.shape, bytes) } }
///
/// Sendable: share one across threads to read tensors in parallel.
public final class SafetensorsFile: Sendable {
    /// The file's path.
    public let path: String
    /// Every tensor, in file (offset) order.
    public let tensors: [SafetensorsTensor]
    /// The header's `__metadata__` (string → string), empty when absent.
    public let metadata: [String: String]
    /// Bytes in the file (header and data).
    public var fileSize: Int { file.size }
    /// Where the data section starts (8 + header length).
    public let dataOffset: Int
    let file: MappedFile
    private let index: [String: Int]

    /// The largest header the reference reader accepts.
    public static let maxHeaderSize = 100_000_000

    /// Bits per element of every dtype of the safetensors spec.
    public static let dtypeBits: [String: Int] = [
        "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
        "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
        "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32,
        "C64": 64, "F64": 64, "I64": 64, "U64": 64,
    ]

    /// Maps and validates the file at `path`.
    /// - Throws: ``ImportError`` naming the file and the first violation found.
    public convenience init(path: String) throws(ImportError) {
        try self.init(file: MappedFile(path: path))
    }

    /// Validates the safetensors bytes of `file`.
    /// - Throws: ``ImportError`` naming the file and the first violation found.
    package init(file: MappedFile) throws(ImportError) {
        let path = file.path
        self.path = path
        self.file = file
        let all = file.bytes
        func fail(_ why: String) -> ImportError { ImportError(file: path, why) }
        guard all.count >= 8 else { throw fail("file is \(all.count) bytes, too short for the 8-byte header length") }
        let n64 = all.loadUnaligned(fromByteOffset: 0, as: UInt64.self).littleEndian
        guard n64 <= UInt64(Self.maxHeaderSize) else { throw fail("header length \(n64) exceeds the 100 MB limit") }
        let n = Int(n64)
        guard 8 + n <= all.count else {
            throw fail("header length \(n) runs past the end of the file (\(all.count) bytes)")
        }
        dataOffset = 8 + n
        let headerBytes = UnsafeRawBufferPointer(rebasing: all[8 ..< 8 + n])
        guard headerBytes.first == UInt8(ascii: "{") else { throw fail("header does not start with '{'") }
        let json: HeaderJSON
        do { json = try HeaderJSON.parse(headerBytes) } catch {
            if let dup = error.duplicateKey { throw fail("header lists \(dup.quoted) twice (\(error))") }
            throw fail("header is not valid JSON: \(error)")
        }
        guard case .object(let members) = json else { throw fail("header is not a JSON object") }

        let dataSize = all.count - dataOffset
        var meta: [String: String] = [:]
        var list: [(tensor: SafetensorsTensor, begin: Int, end: Int)] = []
        for (key, value) in members {
            if key == "__metadata__" {
                guard case .object(let kv) = value else { throw fail("__metadata__ is not an object") }
                for (k, v) in kv {
                    guard case .string(let s) = v else {
                        throw fail("__metadata__ value of \(k.quoted) is not a string")
                    }
                    meta[k] = s
                }
                continue
            }
            guard case .object(let fields) = value else {
                throw fail("tensor \(key.quoted) is \(value.kind), not an object")
            }
            let f = Dictionary(fields.map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a })
            guard case .string(let dtypeName)? = f["dtype"] else {
                throw fail("tensor \(key.quoted) has no string dtype")
            }
            guard let bits = Self.dtypeBits[dtypeName] else {
                throw fail("tensor \(key.quoted) has unknown dtype \(dtypeName.quoted)")
            }
            guard case .array(let dims)? = f["shape"] else { throw fail("tensor \(key.quoted) has no shape array") }
            var shape: [Int] = []
            for d in dims {
                guard let v = d.nonNegativeInt else {
                    throw fail("tensor \(key.quoted) has a shape entry that is not a non-negative integer")
                }
                shape.append(v)
            }
            guard case .array(let offs)? = f["data_offsets"], offs.count == 2,
                let begin = offs[0].nonNegativeInt, let end = offs[1].nonNegativeInt
            else {
                throw fail("tensor \(key.quoted) has no data_offsets pair of non-negative integers")
            }
            guard begin <= end else {
                throw fail("tensor \(key.quoted) has data_offsets [\(begin), \(end)] that end before they begin")
            }
            guard end <= dataSize else {
                throw fail(
                    "tensor \(key.quoted) has data_offsets [\(begin), \(end)] outside the data section (\(dataSize) bytes)"
                )
            }
            var elements = 1
            for d in shape {
                let (m, o) = elements.multipliedReportingOverflow(by: d)
                guard !o else { throw fail("tensor \(key.quoted) has a shape \(shape) whose element count overflows") }
                elements = m
            }
            let (totalBits, o) = elements.multipliedReportingOverflow(by: bits)
            guard !o else { throw fail("tensor \(key.quoted) has a shape \(shape) whose size overflows") }
            guard totalBits % 8 == 0 else {
                throw fail("tensor \(key.quoted) of \(dtypeName) \(shape) does not fill whole bytes")
            }
            guard totalBits / 8 == end - begin else {
                throw fail(
                    "tensor \(key.quoted) of \(dtypeName) \(shape) needs \(totalBits / 8) bytes but data_offsets span \(end - begin)"
                )
            }
            let t = SafetensorsTensor(
                name: key, dtypeName: dtypeName, dtype: DType(safetensorsName: dtypeName),
                shape: shape, byteRange: dataOffset + begin ..< dataOffset + end)
            list.append((t, begin, end))
        }
        list.sort { ($0.begin, $0.end) < ($1.begin, $1.end) }
        var expected = 0
        for e in list {
            guard e.begin == expected else {
                throw fail(
                    e.begin < expected
                        ? "tensor \(e.tensor.name.quoted) at [\(e.begin), \(e.end)] overlaps the tensor before it (which ends at \(expected))"
                        : "tensor \(e.tensor.name.quoted) at [\(e.begin), \(e.end)] leaves a gap after byte \(expected); tensors must be contiguous"
                )
            }
            expected = e.end
        }
        guard expected == dataSize else {
            throw fail("data section is \(dataSize) bytes but the tensors cover \(expected)")
        }
        tensors = list.map(\.tensor)
        metadata = meta
        index = Dictionary(uniqueKeysWithValues: tensors.enumerated().map { ($1.name, $0) })
    }

    /// The tensor called `name`, if the file has one.
    public func tensor(named name: String) -> SafetensorsTensor? { index[name].map { tensors[$0] } }

    /// Lends the bytes of `tensor` (one of ``tensors``), straight out of the mapping.
    /// - Warning: `bytes` is valid only inside `body`.
    public func withBytes<R, E: Error>(
        of tensor: SafetensorsTensor,
        _ body: (_ bytes: UnsafeRawBufferPointer) throws(E) -> R
    ) throws(E) -> R {
        try body(file.bytes(tensor.byteRange))
    }

    /// The bytes of `tensor`, valid as long as this file object lives (package use only).
    package func unsafeBytes(of tensor: SafetensorsTensor) -> UnsafeRawBufferPointer { file.bytes(tensor.byteRange) }

    /// Asks the kernel to read `tensor`'s bytes ahead; a hint only.
    public func prefetch(_ tensor: SafetensorsTensor) { file.prefetch(tensor.byteRange) }
}

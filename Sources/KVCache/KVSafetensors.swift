import Foundation
import WStoreCore

/// A small safetensors reader and writer for KV files: `layers.{l}.keys`,
/// `layers.{l}.values`, `layers.{l}.queries`, `layers.{l}.kept` (see format-spec/KV.md).
public enum KVSafetensors {
    /// One tensor of a safetensors file.
    public struct Tensor: Sendable, Equatable {
        /// The safetensors dtype name: `F16`, `BF16`, `F32`, `I32`, ...
        public let dtype: String
        /// The shape.
        public let shape: [Int]
        /// The little-endian bytes.
        public let bytes: [UInt8]

        /// A tensor from its parts.
        public init(dtype: String, shape: [Int], bytes: [UInt8]) {
            self.dtype = dtype
            self.shape = shape
            self.bytes = bytes
        }

        /// The tensor as a ``KVTensor`` (rank 3, f16/bf16/f32).
        /// - Throws: ``WStoreError/invalidArgument(_:)`` for another rank or dtype.
        public func kvTensor(name: String) throws -> KVTensor {
            guard shape.count == 3 else { throw WStoreError.invalidArgument("\(name) has shape \(shape), expected [heads, tokens, head_dim]") }
            guard let dt = DType(safetensorsName: dtype), KVTensor.supportedDTypes.contains(dt) else {
                throw WStoreError.invalidArgument("\(name) has dtype \(dtype), expected F16, BF16 or F32")
            }
            return try KVTensor(dtype: dt, heads: shape[0], tokens: shape[1], headDim: shape[2], bytes: bytes)
        }
    }

    private static let elementSizes: [String: Int] = [
        "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
        "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
    ]

    /// Reads every tensor of a safetensors file.
    /// - Throws: ``WStoreError/invalidArgument(_:)`` naming the file for a truncated file,
    ///   a header that is not JSON, an unknown dtype, or offsets that do not fit.
    public static func read(path: String) throws -> [String: Tensor] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw WStoreError.invalidArgument("cannot read \(path)")
        }
        func bad(_ why: String) -> WStoreError { .invalidArgument("\(path) is not a valid safetensors file: \(why)") }
        guard data.count >= 8 else { throw bad("\(data.count) bytes, shorter than the 8-byte header length") }
        let bytes = [UInt8](data)
        let headerLength = bytes.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        guard headerLength <= UInt64(bytes.count - 8) else { throw bad("header of \(headerLength) bytes runs past the end of the file") }
        let base = 8 + Int(headerLength)
        let json: Any
        do {
            json = try JSONSerialization.jsonObject(with: Data(bytes[8 ..< base]))
        } catch {
            throw bad("header is not JSON")
        }
        guard let entries = json as? [String: Any] else { throw bad("header is not a JSON object") }
        var out: [String: Tensor] = [:]
        for (name, value) in entries where name != "__metadata__" {
            guard let e = value as? [String: Any], let dtype = e["dtype"] as? String,
                  let shapeAny = e["shape"] as? [Any], let offs = e["data_offsets"] as? [Any], offs.count == 2 else {
                throw bad("entry \(name) lacks dtype, shape or data_offsets")
            }
            guard let size = elementSizes[dtype] else { throw bad("tensor \(name) has unknown dtype \(dtype)") }
            let shape = try shapeAny.map { v -> Int in
                guard let n = (v as? NSNumber)?.intValue, n >= 0 else { throw bad("tensor \(name) has a bad shape") }
                return n
            }
            guard let begin = (offs[0] as? NSNumber)?.intValue, let end = (offs[1] as? NSNumber)?.intValue,
                  begin >= 0, begin <= end, end <= bytes.count - base else {
                throw bad("tensor \(name) lies outside the file (truncated?)")
            }
            let (elements, overflow) = shape.reduce((1, false)) { acc, d in
                let (m, o) = acc.0.multipliedReportingOverflow(by: d)
                return (m, acc.1 || o)
            }
            guard !overflow, elements * size == end - begin else {
                throw bad("tensor \(name): shape \(shape) of \(dtype) does not match its \(end - begin) bytes")
            }
            out[name] = Tensor(dtype: dtype, shape: shape, bytes: Array(bytes[base + begin ..< base + end]))
        }
        return out
    }

    /// Writes `tensors` as a safetensors file (names sorted, header padded to 8 bytes),
    /// through a temporary file renamed into place, so a failed write leaves what was there.
    /// - Throws: ``WStoreError/invalidArgument(_:)`` when the file cannot be written.
    public static func write(_ tensors: [String: Tensor], to path: String, metadata: [String: String] = [:]) throws {
        var header: [String: Any] = [:]
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var offset = 0
        let names = tensors.keys.sorted()
        for name in names {
            let t = tensors[name]!
            header[name] = ["dtype": t.dtype, "shape": t.shape, "data_offsets": [offset, offset + t.bytes.count]] as [String: Any]
            offset += t.bytes.count
        }
        var json = [UInt8](try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys]))
        while json.count % 8 != 0 { json.append(0x20) }
        var file = [UInt8]()
        file.reserveCapacity(8 + json.count + offset)
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { file.append(contentsOf: $0) }
        file.append(contentsOf: json)
        for name in names { file.append(contentsOf: tensors[name]!.bytes) }
        let tmp = path + ".tmp-\(getpid())"
        guard FileManager.default.createFile(atPath: tmp, contents: Data(file)) else {
            throw WStoreError.invalidArgument("cannot write \(path)")
        }
        do {
            if FileManager.default.fileExists(atPath: path) { try FileManager.default.removeItem(atPath: path) }
            try FileManager.default.moveItem(atPath: tmp, toPath: path)
        } catch {
            try? FileManager.default.removeItem(atPath: tmp)
            throw WStoreError.invalidArgument("cannot write \(path): \(error.localizedDescription)")
        }
    }

    /// A KV tensor as a safetensors tensor.
    public static func tensor(_ t: KVTensor) -> Tensor {
        Tensor(dtype: t.dtype.safetensorsName!, shape: t.shape, bytes: t.bytes)
    }

    /// Kept positions `[heads][kept]` as an I32 tensor `[heads, kept]`.
    public static func positions(_ kept: [[Int32]]) -> Tensor {
        let n = kept.first?.count ?? 0
        var bytes = [UInt8]()
        bytes.reserveCapacity(kept.count * n * 4)
        for row in kept { for p in row { withUnsafeBytes(of: p.littleEndian) { bytes.append(contentsOf: $0) } } }
        return Tensor(dtype: "I32", shape: [kept.count, n], bytes: bytes)
    }

    /// An I32 `[heads, kept]` tensor as rows of positions.
    /// - Throws: ``WStoreError/invalidArgument(_:)`` for another dtype or rank.
    public static func positions(_ t: Tensor, name: String) throws -> [[Int32]] {
        guard t.dtype == "I32" || t.dtype == "I64", t.shape.count == 2 else {
            throw WStoreError.invalidArgument("\(name) must be I32 or I64 [heads, kept], got \(t.dtype) \(t.shape)")
        }
        let size = t.dtype == "I32" ? 4 : 8
        return t.bytes.withUnsafeBytes { raw in
            (0 ..< t.shape[0]).map { h in
                (0 ..< t.shape[1]).map { i in
                    let at = (h * t.shape[1] + i) * size
                    return size == 4 ? Int32(littleEndian: raw.loadUnaligned(fromByteOffset: at, as: Int32.self))
                        : Int32(truncatingIfNeeded: Int64(littleEndian: raw.loadUnaligned(fromByteOffset: at, as: Int64.self)))
                }
            }
        }
    }
}

import WStoreCore
import WStoreFormats

@_exported import struct WStoreFormats.ImportError

/// KV files in safetensors form: `layers.{l}.keys`,
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
            guard shape.count == 3 else {
                throw WStoreError.invalidArgument("\(name) has shape \(shape), expected [heads, tokens, head_dim]")
            }
            guard let dt = DType(safetensorsName: dtype), KVTensor.supportedDTypes.contains(dt) else {
                throw WStoreError.invalidArgument("\(name) has dtype \(dtype), expected F16, BF16 or F32")
            }
            return try KVTensor(dtype: dt, heads: shape[0], tokens: shape[1], headDim: shape[2], bytes: bytes)
        }
    }

    /// Reads every tensor of a safetensors file through the one safetensors reader
    /// (``SafetensorsFile``), which validates as the reference reader does.
    /// - Throws: ``ImportError`` naming the file and the first problem found.
    public static func read(path: String) throws(ImportError) -> [String: Tensor] {
        let file = try SafetensorsFile(path: path)
        var out: [String: Tensor] = [:]
        for t in file.tensors {
            out[t.name] = file.withBytes(of: t) { Tensor(dtype: t.dtypeName, shape: t.shape, bytes: Array($0)) }
        }
        return out
    }

    /// Writes `tensors` as a safetensors file (names sorted) through ``SafetensorsWriter``:
    /// a temporary file renamed into place, so a failed write leaves what was there.
    /// - Throws: ``ImportError`` naming `path` when it cannot be written.
    public static func write(_ tensors: [String: Tensor], to path: String, metadata: [String: String] = [:]) throws {
        let names = tensors.keys.sorted()
        let entries = names.map { n in
            let t = tensors[n]!
            return SafetensorsWriter.Entry(name: n, dtypeName: t.dtype, shape: t.shape, byteCount: t.bytes.count)
        }
        let meta = metadata.keys.sorted().map { (key: $0, value: metadata[$0]!) }
        try SafetensorsWriter.write(to: path, entries: entries, metadata: meta) { put in
            for n in names { try tensors[n]!.bytes.withUnsafeBytes { try put($0) } }
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
                    return size == 4
                        ? Int32(littleEndian: raw.loadUnaligned(fromByteOffset: at, as: Int32.self))
                        : Int32(
                            truncatingIfNeeded: Int64(
                                littleEndian: raw.loadUnaligned(fromByteOffset: at, as: Int64.self)))
                }
            }
        }
    }
}

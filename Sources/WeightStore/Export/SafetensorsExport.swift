import Foundation
import WStoreCore
#if canImport(Glibc)
import Glibc
#endif

/// Writes tensors of a store out as one safetensors file, byte-identical to what was
/// packed (format-spec/IMPORT-EXPORT.md §3).
///
/// Opaque GGUF blocks (``DType/ggml(_:)``) have no safetensors dtype: they export as
/// `U8` tensors of shape `[bytes]`, and the header's `__metadata__` records their
/// ggml type and element shape under `wstore.ggml.<name>`.
public enum SafetensorsExport {
    /// What an export wrote.
    public struct Summary: Sendable {
        /// Tensors written.
        public var tensors = 0
        /// Tensor bytes written (the header not counted).
        public var bytes = 0
    }

    /// Exports every tensor of `model` whose name `include` accepts to `path`, written
    /// to a temporary file beside it and renamed into place only when complete.
    /// - Throws: ``WStoreError`` (a corrupt record is a checksum error, never wrong
    ///   bytes), or an ``ImportError`` naming `path` when it cannot be written.
    @discardableResult
    public static func export(_ store: WeightStore, model: String = WeightStore.defaultModel, to path: String,
                              include: (String) -> Bool = { _ in true }) throws -> Summary {
        try store.withSnapshot { s in
            let infos = try s.tensors(model: model).filter { include($0.name) }
            var entries: [(key: String, json: String)] = []
            var meta: [(String, String)] = [("format", "pt"), ("wstore.model", model)]
            var offset = 0
            for t in infos {
                let dtypeName: String
                var shape = t.shape
                if let n = t.dtype.safetensorsName {
                    dtypeName = n
                } else if case .ggml(let id) = t.dtype {
                    dtypeName = "U8"
                    shape = [t.rawSize]
                    let typeName = GGMLType.byID(id)?.name ?? "\(id)"
                    meta.append(("wstore.ggml.\(t.name)", "\(typeName) \(t.shape)"))
                } else {
                    throw WStoreError.invalidArgument("tensor \(t.name) has dtype \(t.dtype), which safetensors cannot hold")
                }
                let shapeText = "[" + shape.map(String.init).joined(separator: ",") + "]"
                entries.append((t.name, "{\"dtype\":\"\(dtypeName)\",\"shape\":\(shapeText),\"data_offsets\":[\(offset),\(offset + t.rawSize)]}"))
                offset += t.rawSize
            }
            var header = "{\"__metadata__\":{" + meta.map { "\(jsonString($0.0)):\(jsonString($0.1))" }.joined(separator: ",") + "}"
            for e in entries { header += ",\(jsonString(e.key)):\(e.json)" }
            header += "}"
            // Pad with spaces so the data section starts 8-byte aligned, as the reference writer does.
            while (header.utf8.count) % 8 != 0 { header += " " }

            let tmp = path + ".wstore-partial-\(getpid())"
            let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw ImportError(file: path, "cannot write: \(String(cString: strerror(errno)))") }
            var ok = false
            defer {
                close(fd)
                if !ok { unlink(tmp) }
            }
            func put(_ b: UnsafeRawBufferPointer) throws {
                var at = 0
                while at < b.count {
                    let n = Glibc.write(fd, b.baseAddress! + at, b.count - at)
                    if n < 0 && errno == EINTR { continue }
                    guard n > 0 else { throw ImportError(file: path, "write failed: \(String(cString: strerror(errno)))") }
                    at += n
                }
            }
            var len = UInt64(header.utf8.count).littleEndian
            try withUnsafeBytes(of: &len) { try put($0) }
            try Array(header.utf8).withUnsafeBytes { try put($0) }
            var scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 0, alignment: 64)
            defer { scratch.deallocate() }
            var summary = Summary()
            for t in infos {
                if t.isRaw {
                    try s.withTensor(t.name, model: model, verify: true) { b, _ in try put(b) }
                } else {
                    if scratch.count < t.rawSize {
                        scratch.deallocate()
                        scratch = .allocate(byteCount: t.rawSize, alignment: 64)
                    }
                    let buf = UnsafeMutableRawBufferPointer(rebasing: scratch[0 ..< t.rawSize])
                    try s.read(t.name, model: model, into: buf, threads: System.activeProcessorCount)
                    try put(UnsafeRawBufferPointer(buf))
                }
                summary.tensors += 1
                summary.bytes += t.rawSize
            }
            guard fsync(fd) == 0 else { throw ImportError(file: path, "fsync failed: \(String(cString: strerror(errno)))") }
            guard rename(tmp, path) == 0 else { throw ImportError(file: path, "cannot move into place: \(String(cString: strerror(errno)))") }
            ok = true
            return summary
        }
    }

    /// `s` as a JSON string literal.
    static func jsonString(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where u.value < 0x20: out += String(format: "\\u%04x", u.value)
            default: out.unicodeScalars.append(u)
            }
        }
        return out + "\""
    }
}

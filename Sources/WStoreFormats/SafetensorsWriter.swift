import WStoreCore

/// Writes safetensors files: the one writer for exported weights and KV files.
///
/// The header lists the tensors in the order given, with contiguous `data_offsets`, and is
/// padded with spaces so the data section starts 8-byte aligned, as the reference writer
/// does. The file is written beside `path` under a temporary name, fsynced, and renamed into
/// place only when complete, so a failed write leaves whatever was at `path` before.
public enum SafetensorsWriter {
    /// One tensor's header entry.
    public struct Entry: Sendable, Hashable {
        /// The tensor's name.
        public var name: String
        /// The safetensors dtype name (`BF16`, `F32`, `U8`, ...).
        public var dtypeName: String
        /// Dimensions, outermost first.
        public var shape: [Int]
        /// Bytes of the tensor's data.
        public var byteCount: Int

        /// An entry from its parts.
        public init(name: String, dtypeName: String, shape: [Int], byteCount: Int) {
            self.name = name
            self.dtypeName = dtypeName
            self.shape = shape
            self.byteCount = byteCount
        }
    }

    /// The 8-byte length and the padded JSON header for `entries` and `metadata`.
    public static func header(entries: [Entry], metadata: [(key: String, value: String)]) -> [UInt8] {
        var header = "{"
        if !metadata.isEmpty {
            header +=
                "\"__metadata__\":{"
                + metadata.map { "\(jsonString($0.key)):\(jsonString($0.value))" }.joined(separator: ",") + "}"
        }
        var offset = 0
        for (i, e) in entries.enumerated() {
            if i > 0 || !metadata.isEmpty { header += "," }
            let shapeText = "[" + e.shape.map(String.init).joined(separator: ",") + "]"
            header +=
                "\(jsonString(e.name)):{\"dtype\":\"\(e.dtypeName)\",\"shape\":\(shapeText),\"data_offsets\":[\(offset),\(offset + e.byteCount)]}"
            offset += e.byteCount
        }
        header += "}"
        while header.utf8.count % 8 != 0 { header += " " }
        var out = [UInt8]()
        out.reserveCapacity(8 + header.utf8.count)
        withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(contentsOf: header.utf8)
        return out
    }

    /// Writes a safetensors file at `path`: the header for `entries`, then the tensors' bytes,
    /// which `body` hands to `put` in the order of `entries`.
    /// - Throws: ``WStoreError/io(call:path:errno:)`` naming the call and the file when it
    ///   cannot be written; ``ImportError`` naming `path` when `body` puts a different number
    ///   of bytes than the entries announce; whatever `body` throws. On any failure the
    ///   temporary file is removed and whatever was at `path` is left as it was.
    public static func write(
        to path: String, entries: [Entry], metadata: [(key: String, value: String)] = [],
        body: (_ put: (UnsafeRawBufferPointer) throws -> Void) throws -> Void
    ) throws {
        try Posix.writeAtomically(to: path) { write in
            try withoutActuallyEscaping(write) { write in
                var written = 0
                func put(_ b: UnsafeRawBufferPointer) throws {
                    try write(b)
                    written += b.count
                }
                let head = header(entries: entries, metadata: metadata)
                try head.withUnsafeBytes { try put($0) }
                try body(put)
                let expected = head.count + entries.reduce(0) { $0 + $1.byteCount }
                guard written == expected else {
                    throw ImportError(file: path, "wrote \(written) bytes where the header announces \(expected)")
                }
            }
        }
    }

    /// `s` as a JSON string literal (quotes, backslashes and control characters escaped).
    public static func jsonString(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where u.value < 0x20:
                let hex = String(u.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(u)
            }
        }
        return out + "\""
    }
}

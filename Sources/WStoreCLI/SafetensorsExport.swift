import WStoreCore
import WStoreFormats
import WeightStore

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
    public static func export(
        _ store: WeightStore, model: String = WeightStore.defaultModel, to path: String,
        include: (String) -> Bool = { _ in true }
    ) throws -> Summary {
        try store.withSnapshot { s in
            let infos = try s.tensors(model: model).filter { include($0.name) }
            var entries: [SafetensorsWriter.Entry] = []
            var meta: [(key: String, value: String)] = [("format", "pt"), ("wstore.model", model)]
            for t in infos {
                if let n = t.dtype.safetensorsName {
                    entries.append(.init(name: t.name, dtypeName: n, shape: t.shape, byteCount: t.rawSize))
                } else if case .ggml(let id) = t.dtype {
                    entries.append(.init(name: t.name, dtypeName: "U8", shape: [t.rawSize], byteCount: t.rawSize))
                    let typeName = GGMLType.byID(id)?.name ?? "\(id)"
                    meta.append(("wstore.ggml.\(t.name)", "\(typeName) \(t.shape)"))
                } else {
                    throw WStoreError.invalidArgument(
                        "tensor \(t.name) has dtype \(t.dtype), which safetensors cannot hold")
                }
            }
            var summary = Summary()
            try SafetensorsWriter.write(to: path, entries: entries, metadata: meta) { put in
                var scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 0, alignment: 64)
                defer { scratch.deallocate() }
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
            }
            return summary
        }
    }
}

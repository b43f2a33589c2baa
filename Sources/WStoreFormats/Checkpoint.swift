import Foundation
import WStoreCore

/// One tensor to import: its name and layout in the store, where its bytes are, and
/// the expert it belongs to.
public struct CheckpointTensor: Sendable {
    /// The name it gets in the store.
    public let name: String
    /// Its element type (``DType/ggml(_:)`` for quantized GGUF blocks).
    public let dtype: DType
    /// Dimensions, outermost first (C order).
    public let shape: [Int]
    /// The MoE expert part it is, if any.
    public let expert: ExpertKey?
    /// The file its bytes come from.
    public var sourceFile: String { file.path }
    /// Bytes of the tensor.
    public var byteCount: Int { byteRange.count }
    /// Where its bytes start in ``sourceFile``.
    public var sourceOffset: Int { byteRange.lowerBound }
    let file: MappedFile
    let byteRange: Range<Int>
}

/// A checkpoint to import: safetensors files (one, a sharded checkpoint through its
/// `*.safetensors.index.json`, or a folder) and GGUF files, validated, with expert
/// tensors recognised and stacked GGUF experts split into one tensor per expert.
///
///     let ckpt = try Checkpoint(paths: ["Mixtral-8x7B/"])
///     for t in ckpt.tensors { ckpt.withBytes(of: t) { bytes in use(t.name, bytes) } }
public final class Checkpoint: Sendable {
    /// Every tensor, in source order.
    public let tensors: [CheckpointTensor]
    /// What the sources say about the model (layers, experts, top-k, GGUF metadata).
    public let modelInfo: ModelInfo
    /// The source files, as read.
    public let files: [String]

    /// The most experts a layer may have (in a stacked GGUF tensor or a config.json).
    public static let maxExpertsPerLayer = 1 << 16
    /// The fewest bytes an expert split out of a stacked GGUF tensor may have.
    public static let minStackedExpertBytes = 64
    /// The most layers a config.json or GGUF metadata may claim.
    public static let maxLayers = 1 << 16

    /// Reads and validates every source.
    /// - Parameters:
    ///   - paths: safetensors files, `*.safetensors.index.json` files, GGUF files, or folders of them.
    ///   - naming: how expert tensors are recognised.
    /// - Throws: ``ImportError`` naming the file and the first problem found.
    public init(paths: [String], naming: ExpertNaming = ExpertNaming()) throws(ImportError) {
        guard !paths.isEmpty else { throw ImportError(file: "(none)", "no source given") }
        var st: [SafetensorsFile] = []
        var gg: [GGUFFile] = []
        var configs: [String] = []
        var indexed: [(index: String, weightMap: [String: String], dir: String)] = []
        let fm = FileManager.default
        for path in paths {
            var isDir: ObjCBool = false
            guard fm.fileExists(atPath: path, isDirectory: &isDir) else {
                throw ImportError(file: path, "no such file or directory")
            }
            let dir = isDir.boolValue ? path : (path as NSString).deletingLastPathComponent
            configs.append(((dir.isEmpty ? "." : dir) as NSString).appendingPathComponent("config.json"))
            if isDir.boolValue {
                let entries: [String]
                do { entries = try fm.contentsOfDirectory(atPath: path).sorted() } catch {
                    throw ImportError(file: path, "cannot list the folder")
                }
                if let index = entries.first(where: { $0.hasSuffix(".safetensors.index.json") }) {
                    let (map, shards) = try Self.readIndex((path as NSString).appendingPathComponent(index))
                    indexed.append(((path as NSString).appendingPathComponent(index), map, path))
                    for s in shards {
                        st.append(try SafetensorsFile(path: (path as NSString).appendingPathComponent(s)))
                    }
                    for g in entries where g.hasSuffix(".gguf") {
                        gg.append(try GGUFFile(path: (path as NSString).appendingPathComponent(g)))
                    }
                    continue
                }
                let found = entries.filter { $0.hasSuffix(".safetensors") || $0.hasSuffix(".gguf") }
                guard !found.isEmpty else {
                    throw ImportError(file: path, "folder holds no .safetensors or .gguf file")
                }
                for f in found {
                    let full = (path as NSString).appendingPathComponent(f)
                    if f.hasSuffix(".gguf") {
                        gg.append(try GGUFFile(path: full))
                    } else {
                        st.append(try SafetensorsFile(path: full))
                    }
                }
            } else if path.hasSuffix(".json") {
                let (map, shards) = try Self.readIndex(path)
                indexed.append((path, map, dir))
                for s in shards { st.append(try SafetensorsFile(path: (dir as NSString).appendingPathComponent(s))) }
            } else if Self.looksLikeGGUF(path) {
                gg.append(try GGUFFile(path: path))
            } else {
                st.append(try SafetensorsFile(path: path))
            }
        }
        // An index must list exactly what its shards hold.
        let byPath = Dictionary(st.map { ($0.path, $0) }, uniquingKeysWith: { a, _ in a })
        for ix in indexed {
            for (name, shard) in ix.weightMap {
                let shardPath = (ix.dir as NSString).appendingPathComponent(shard)
                guard let f = byPath[shardPath], f.tensor(named: name) != nil else {
                    throw ImportError(
                        file: ix.index, "lists tensor \(name.quoted) in \(shard.quoted), which does not hold it")
                }
            }
            let shards = Set(ix.weightMap.values.map { (ix.dir as NSString).appendingPathComponent($0) })
            for f in st where shards.contains(f.path) {
                for t in f.tensors where ix.weightMap[t.name] == nil {
                    throw ImportError(
                        file: ix.index,
                        "does not list tensor \(t.name.quoted) of \((f.path as NSString).lastPathComponent)")
                }
            }
        }

        var out: [CheckpointTensor] = []
        var seen: [String: String] = [:]
        func add(_ t: CheckpointTensor) throws(ImportError) {
            if let e = t.expert,
                e.layer >= Self.maxLayers || e.expert >= ExpertNaming.sharedExpertBase + Self.maxExpertsPerLayer
            {
                throw ImportError(
                    file: t.sourceFile,
                    "tensor \(t.name.quoted) names layer \(e.layer), expert \(e.expert): out of range (\(Self.maxLayers) layers, \(Self.maxExpertsPerLayer) experts per layer)"
                )
            }
            if let other = seen[t.name] {
                throw ImportError(file: t.sourceFile, "tensor \(t.name.quoted) is also in \(other)")
            }
            seen[t.name] = t.sourceFile
            out.append(t)
        }
        for f in st {
            for t in f.tensors {
                guard let dtype = t.dtype else {
                    throw ImportError(
                        file: f.path, "tensor \(t.name.quoted) has dtype \(t.dtypeName), which wstore cannot store")
                }
                try add(
                    CheckpointTensor(
                        name: t.name, dtype: dtype, shape: t.shape, expert: naming.match(t.name)?.key,
                        file: f.file, byteRange: t.byteRange))
            }
        }
        var info = ModelInfo(name: "")
        for f in gg {
            for t in f.tensors {
                if let s = naming.stacked(t.name), t.dims.count >= 2 {
                    let n = t.dims.last!
                    guard n > 0, t.byteRange.count % n == 0 else {
                        throw ImportError(
                            file: f.path,
                            "stacked expert tensor \(t.name.quoted) does not split into \(n) equal experts")
                    }
                    // Each expert becomes a record: a few bytes of input must not become millions of records.
                    guard n <= Self.maxExpertsPerLayer else {
                        throw ImportError(
                            file: f.path,
                            "stacked expert tensor \(t.name.quoted) holds \(n) experts, more than \(Self.maxExpertsPerLayer) per layer"
                        )
                    }
                    let each = t.byteRange.count / n
                    guard each >= Self.minStackedExpertBytes else {
                        throw ImportError(
                            file: f.path,
                            "stacked expert tensor \(t.name.quoted) splits into \(n) experts of \(each) bytes, under \(Self.minStackedExpertBytes) bytes each"
                        )
                    }
                    let shape = Array(t.shape.dropFirst())
                    for e in 0 ..< n {
                        let start = t.byteRange.lowerBound + e * each
                        try add(
                            CheckpointTensor(
                                name: s.perExpertName(e), dtype: t.type.dtype, shape: shape,
                                expert: ExpertKey(layer: s.layer, expert: e, part: s.part),
                                file: f.file, byteRange: start ..< start + each))
                    }
                } else {
                    try add(
                        CheckpointTensor(
                            name: t.name, dtype: t.type.dtype, shape: t.shape, expert: naming.match(t.name)?.key,
                            file: f.file, byteRange: t.byteRange))
                }
            }
            for (k, v) in f.metadata { info.extra["gguf." + k] = v.description }
            if case .string(let arch)? = f.value("general.architecture") {
                func int(_ key: String, min: Int, max: Int) throws(ImportError) -> Int? {
                    guard let v = f.value(key) else { return nil }
                    guard let n = v.intValue, (min ... max).contains(n) else {
                        throw ImportError(
                            file: f.path,
                            "metadata \(key.quoted) is \(v.description.quoted), expected an integer from \(min) to \(max)"
                        )
                    }
                    return n == 0 ? nil : n
                }
                if info.layers == nil { info.layers = try int("\(arch).block_count", min: 1, max: Self.maxLayers) }
                if info.expertsPerLayer == nil {
                    info.expertsPerLayer = try int("\(arch).expert_count", min: 0, max: Self.maxExpertsPerLayer)
                }
                if info.topK == nil {
                    info.topK = try int("\(arch).expert_used_count", min: 0, max: Self.maxExpertsPerLayer)
                }
            }
        }
        for f in st {
            for (k, v) in f.metadata { info.extra["safetensors." + k] = v }
        }
        // config.json beside the weights (Hugging Face layout) knows the MoE shape.
        for c in Set(configs).sorted() {
            guard let data = fm.contents(atPath: c),
                let obj = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
            else { continue }
            // 0 or null experts is how some dense models say "no experts"; negative or absurd counts are refused.
            func int(_ keys: [String], min: Int, max: Int) throws(ImportError) -> Int? {
                for k in keys {
                    guard let v = obj[k], !(v is NSNull) else { continue }
                    guard let n = v as? Int, (min ... max).contains(n) else {
                        throw ImportError(
                            file: c, "\(k.quoted) is \("\(v)".quoted), expected an integer from \(min) to \(max)")
                    }
                    return n == 0 ? nil : n
                }
                return nil
            }
            if info.layers == nil {
                info.layers = try int(["num_hidden_layers", "n_layer", "num_layers"], min: 1, max: Self.maxLayers)
            }
            if info.expertsPerLayer == nil {
                info.expertsPerLayer = try int(
                    ["num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts"], min: 0,
                    max: Self.maxExpertsPerLayer)
            }
            if info.topK == nil {
                info.topK = try int(
                    ["num_experts_per_tok", "moe_top_k", "top_k"], min: 0, max: Self.maxExpertsPerLayer)
            }
            if let k = info.topK, let e = info.expertsPerLayer, k > e {
                throw ImportError(file: c, "top-k \(k) exceeds the \(e) experts per layer")
            }
        }
        guard !out.isEmpty else { throw ImportError(file: paths[0], "holds no tensor") }
        // Otherwise count from the names.
        let layered = out.compactMap { t in ExpertNaming.layer(of: t.name).map { (t, $0) } }
        if info.layers == nil, let (t, m) = layered.max(by: { $0.1 < $1.1 }) {
            guard m < Self.maxLayers else {
                throw ImportError(
                    file: t.sourceFile, "tensor \(t.name.quoted) names layer \(m), more than \(Self.maxLayers) layers")
            }
            info.layers = m + 1
        }
        let routed = out.compactMap { $0.expert }.filter { $0.expert < ExpertNaming.sharedExpertBase }
        if info.expertsPerLayer == nil, let m = routed.map(\.expert).max() { info.expertsPerLayer = m + 1 }
        info.sources = st.map(\.path) + gg.map(\.path)
        tensors = out
        modelInfo = info
        files = info.sources
    }

    /// Lends the bytes of `tensor` (one of ``tensors``), straight out of its file's mapping.
    /// - Warning: `bytes` is valid only inside `body`.
    public func withBytes<R, E: Error>(
        of tensor: CheckpointTensor,
        _ body: (_ bytes: UnsafeRawBufferPointer) throws(E) -> R
    ) throws(E) -> R {
        try body(tensor.file.bytes(tensor.byteRange))
    }

    /// Asks the kernel to read `tensor`'s bytes ahead; a hint only.
    public func prefetch(_ tensor: CheckpointTensor) { tensor.file.prefetch(tensor.byteRange) }

    /// Unmaps `tensor`'s pages from this process once it has been read (they stay in the
    /// page cache); bytes lent by ``withBytes(of:_:)`` stay valid and map in again on access.
    public func release(_ tensor: CheckpointTensor) { tensor.file.release(tensor.byteRange) }

    private static func looksLikeGGUF(_ path: String) -> Bool {
        if path.hasSuffix(".gguf") { return true }
        guard let h = FileHandle(forReadingAtPath: path) else { return false }
        defer { try? h.close() }
        let d = (try? h.read(upToCount: 4)) ?? Data()
        return d == Data("GGUF".utf8)
    }

    /// Reads a `*.safetensors.index.json`: its weight map and its shard files, in order.
    private static func readIndex(_ path: String) throws(ImportError) -> ([String: String], [String]) {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ImportError(file: path, "cannot read the index")
        }
        let json: HeaderJSON
        do { json = try data.withUnsafeBytes { (b) throws(HeaderJSONError) in try HeaderJSON.parse(b) } } catch {
            throw ImportError(file: path, "index is not valid JSON: \(error)")
        }
        guard case .object(let top) = json, case .object(let wm)? = top.first(where: { $0.key == "weight_map" })?.value
        else {
            throw ImportError(file: path, "index has no weight_map object")
        }
        guard !wm.isEmpty else { throw ImportError(file: path, "index has an empty weight_map: it lists no tensor") }
        var map: [String: String] = [:]
        var shards = Set<String>()
        for (name, v) in wm {
            guard case .string(let shard) = v, !shard.isEmpty, !shard.split(separator: "/").contains("..") else {
                throw ImportError(file: path, "weight_map entry \(name.quoted) is not a shard file name")
            }
            map[name] = shard
            shards.insert(shard)
        }
        return (map, shards.sorted())
    }
}

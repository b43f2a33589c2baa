import WStoreCore

/// What the store knows of one quantized variant of an expert part, read from its record
/// header (format-spec/FORMAT.md §8).
public struct VariantInfo: Sendable, Hashable {
    public let model: String
    /// The part it is a copy of: (layer, expert, part).
    public let key: ExpertKey
    /// ``ExpertPrecision/q8_0`` or ``ExpertPrecision/q4_0``.
    public let precision: ExpertPrecision
    /// ``DType/q8_0`` or ``DType/q4_0``: GGML blocks of 32 elements along the last dimension.
    public let dtype: DType
    /// The part's logical element shape (the exact tensor's shape), outermost first.
    public let shape: [Int]
    /// `raw` (readable zero-copy) or `zstd`.
    public let codec: String
    /// Bytes of the blocks.
    public let rawSize: Int
    /// Bytes of the stored payload.
    public let storedSize: Int
    /// xxh3-64 of the blocks.
    public let checksum: UInt64

    /// Elements of the part (the product of ``shape``).
    public var elements: Int { shape.reduce(1, *) }

    /// `true` when ``WeightStore/Snapshot/withVariant(_:of:model:verify:_:)`` can lend the blocks in place.
    public var isRaw: Bool { codec == "raw" }
}

extension VariantInfo {
    /// What the record header of a variant says (the struct's memberwise initializer stays
    /// available because this one is declared in an extension).
    init(model: String, key: ExpertKey, precision: ExpertPrecision, record r: RecordView) {
        self.init(
            model: model, key: key, precision: precision, dtype: r.dtype, shape: r.shape, codec: r.codec.name,
            rawSize: r.rawSize, storedSize: r.storedSize, checksum: r.checksum)
    }
}

extension WeightStore.Snapshot {
    /// The record of variant `precision` of part `key`, validated against its key and its
    /// precision (dtype, block size for the shape); `nil` when absent.
    func variantRecord(
        _ precision: ExpertPrecision, of key: ExpertKey, model: String, payload: Bool = false
    ) throws -> RecordView? {
        guard let db = store.variantsDB else { return nil }
        let vk = try store.variantKey(model: model, key, precision)
        guard let bytes = try txn.get(db, vk) else { return nil }
        if payload { store.env.prepareToRead(bytes) }
        let label = "\(model)/\(key.layer)/\(key.expert)/\(key.part)@\(precision)"
        let r = try store.view(bytes, key: Record.binding(key: vk), name: label)
        try WeightStore.checkVariant(r, precision: precision, label: label)
        return r
    }

    func requireVariant(
        _ precision: ExpertPrecision, of key: ExpertKey, model: String, payload: Bool = false
    ) throws -> RecordView {
        guard let r = try variantRecord(precision, of: key, model: model, payload: payload) else {
            throw WStoreError.notFound("\(precision) variant of \(key) in model \(model)")
        }
        return r
    }

    /// The precisions stored for part `part` of expert (`layer`, `expert`), finest first:
    /// ``ExpertPrecision/exact`` when the part is indexed, then its variants. Empty when the
    /// part is unknown.
    /// - Throws: a corrupt-record error for a damaged index entry.
    public func precisions(
        layer: Int, expert: Int, part: String, model: String = WeightStore.defaultModel
    ) throws -> [ExpertPrecision] {
        try precisions(layer: layer, expert: expert, model: model)[part] ?? []
    }

    /// The precisions stored for every part of expert (`layer`, `expert`): part name → finest
    /// first, as ``precisions(layer:expert:part:model:)``. Reads keys only, no record.
    public func precisions(
        layer: Int, expert: Int, model: String = WeightStore.defaultModel
    ) throws -> [String: [ExpertPrecision]] {
        var out: [String: [ExpertPrecision]] = [:]
        if let e = try self.expert(layer: layer, expert: expert, model: model) {
            for part in e.parts.keys { out[part] = [.exact] }
        }
        guard let db = store.variantsDB else { return out }
        let modelPrefix = Keys.modelPrefix(model)
        try txn.scan(db, prefix: Keys.expertPrefix(model: model, layer: layer, expert: expert)) { k, _ in
            if let (key, p) = Keys.parseVariant(k, prefixLength: modelPrefix.count) {
                out[key.part, default: []].append(p)
            }
            return true
        }
        for part in out.keys { out[part]!.sort(by: >) }
        return out
    }

    /// Every variant of `model` (of one layer when `layer` is given), in key order,
    /// read from the record headers.
    /// - Throws: a corrupt-record error for the first damaged header.
    public func variants(model: String = WeightStore.defaultModel, layer: Int? = nil) throws -> [VariantInfo] {
        guard let db = store.variantsDB else { return [] }
        let modelPrefix = Keys.modelPrefix(model)
        let prefix = layer.map { Keys.expertPrefix(model: model, layer: $0) } ?? modelPrefix
        var out: [VariantInfo] = []
        var failure: (any Error)?
        try txn.scan(db, prefix: prefix) { k, v in
            guard let (key, p) = Keys.parseVariant(k, prefixLength: modelPrefix.count) else {
                // A precision this build does not know is skipped, but only when its record is
                // bound to the key: a key damaged into an unknown name is an error.
                do { _ = try store.view(v, key: Record.binding(key: k), name: "\(model)/variant key") } catch {
                    failure = error
                    return false
                }
                return true
            }
            let label = "\(model)/\(key.layer)/\(key.expert)/\(key.part)@\(p)"
            do {
                let r = try store.view(v, key: Record.binding(key: k), name: label)
                try WeightStore.checkVariant(r, precision: p, label: label)
                out.append(VariantInfo(model: model, key: key, precision: p, record: r))
            } catch {
                failure = error
                return false
            }
            return true
        }
        if let failure { throw failure }
        return out
    }

    /// What the store knows of variant `precision` of part `key`; `nil` when there is none.
    /// - Throws: a corrupt-record error when its header is damaged.
    public func variantInfo(
        _ precision: ExpertPrecision, of key: ExpertKey, model: String = WeightStore.defaultModel
    ) throws -> VariantInfo? {
        try variantRecord(precision, of: key, model: model).map {
            VariantInfo(model: model, key: key, precision: precision, record: $0)
        }
    }

    /// Lends the blocks of a raw variant, in place in the memory map (zero-copy, 64-byte aligned).
    ///
    /// - Parameter verify: check the blocks' checksums first (reads every byte).
    /// - Throws: ``WStoreError/notFound(_:)`` when there is no such variant,
    ///   ``WStoreError/notRaw(name:codec:)`` for a compressed one (use
    ///   ``readVariant(_:of:model:into:threads:verify:path:)``), a corrupt-record error.
    /// - Warning: `blocks` is valid only inside `body`.
    public func withVariant<R>(
        _ precision: ExpertPrecision, of key: ExpertKey, model: String = WeightStore.defaultModel,
        verify: Bool = false, _ body: (_ blocks: UnsafeRawBufferPointer, _ info: VariantInfo) throws -> R
    ) throws -> R {
        let r = try requireVariant(precision, of: key, model: model, payload: true)
        let info = VariantInfo(model: model, key: key, precision: precision, record: r)
        guard r.codec == .raw else { throw WStoreError.notRaw(name: "\(key)@\(precision)", codec: r.codec.name) }
        if verify { try RecordDecoder.verify(r, name: "\(model)/\(key)@\(precision)", r.payload, threads: 1) }
        return try body(r.payload, info)
    }

    /// Copies (or decodes) the blocks of variant `precision` of part `key` into `buffer`
    /// (exactly ``VariantInfo/rawSize`` bytes), checking every block or frame checksum.
    ///
    /// - Throws: ``WStoreError/notFound(_:)``, ``WStoreError/checksumMismatch(name:expected:actual:)``
    ///   rather than return wrong bytes, ``WStoreError/invalidArgument(_:)`` for a buffer of
    ///   another size.
    @discardableResult
    public func readVariant(
        _ precision: ExpertPrecision, of key: ExpertKey, model: String = WeightStore.defaultModel,
        into buffer: UnsafeMutableRawBufferPointer, threads: Int = 1, verify: Bool = true, path: ReadPath = .map
    ) throws -> VariantInfo {
        let r = try requireVariant(precision, of: key, model: model, payload: true)
        try store.decode(
            r, label: "\(model)/\(key)@\(precision)", into: buffer, threads: threads, verify: verify, path: path)
        return VariantInfo(model: model, key: key, precision: precision, record: r)
    }
}

extension WeightStore {
    /// A variant record must hold its precision's block dtype, a shape whose last dimension is
    /// whole blocks, and exactly the bytes of those blocks.
    static func checkVariant(_ r: RecordView, precision: ExpertPrecision, label: String) throws {
        guard r.dtype == precision.blockDType else {
            throw WStoreError.corruptRecord(name: label, reason: "dtype \(r.dtype) in a \(precision) variant")
        }
        guard let bytes = r.dtype.blockByteCount(shape: r.shape), bytes == r.rawSize else {
            throw WStoreError.corruptRecord(
                name: label, reason: "shape \(r.shape) of \(precision) blocks does not take \(r.rawSize) bytes")
        }
    }

    /// See ``Snapshot/precisions(layer:expert:part:model:)``.
    public func precisions(
        layer: Int, expert: Int, part: String, model: String = WeightStore.defaultModel
    ) throws -> [ExpertPrecision] {
        try withSnapshot { try $0.precisions(layer: layer, expert: expert, part: part, model: model) }
    }

    /// See ``Snapshot/precisions(layer:expert:model:)``.
    public func precisions(
        layer: Int, expert: Int, model: String = WeightStore.defaultModel
    ) throws -> [String: [ExpertPrecision]] {
        try withSnapshot { try $0.precisions(layer: layer, expert: expert, model: model) }
    }

    /// See ``Snapshot/variants(model:layer:)``.
    public func variants(model: String = WeightStore.defaultModel, layer: Int? = nil) throws -> [VariantInfo] {
        try withSnapshot { try $0.variants(model: model, layer: layer) }
    }

    /// See ``Snapshot/variantInfo(_:of:model:)``.
    public func variantInfo(
        _ precision: ExpertPrecision, of key: ExpertKey, model: String = WeightStore.defaultModel
    ) throws -> VariantInfo? {
        try withSnapshot { try $0.variantInfo(precision, of: key, model: model) }
    }

    /// See ``Snapshot/withVariant(_:of:model:verify:_:)``.
    public func withVariant<R>(
        _ precision: ExpertPrecision, of key: ExpertKey, model: String = WeightStore.defaultModel,
        verify: Bool = false, _ body: (_ blocks: UnsafeRawBufferPointer, _ info: VariantInfo) throws -> R
    ) throws -> R {
        try withSnapshot { try $0.withVariant(precision, of: key, model: model, verify: verify, body) }
    }

    /// See ``Snapshot/readVariant(_:of:model:into:threads:verify:path:)``.
    @discardableResult
    public func readVariant(
        _ precision: ExpertPrecision, of key: ExpertKey, model: String = WeightStore.defaultModel,
        into buffer: UnsafeMutableRawBufferPointer, threads: Int = defaultThreadCount, verify: Bool = true,
        path: ReadPath = .map
    ) throws -> VariantInfo {
        try withSnapshot {
            try $0.readVariant(
                precision, of: key, model: model, into: buffer, threads: threads, verify: verify, path: path)
        }
    }

    /// Reads variant `precision` of part `key` into a new array, checksums checked.
    public func readVariantBytes(
        _ precision: ExpertPrecision, of key: ExpertKey, model: String = WeightStore.defaultModel,
        threads: Int = defaultThreadCount
    ) throws -> [UInt8] {
        try withSnapshot { s in
            guard let info = try s.variantInfo(precision, of: key, model: model) else {
                throw WStoreError.notFound("\(precision) variant of \(key) in model \(model)")
            }
            var out = [UInt8](repeating: 0, count: info.rawSize)
            try out.withUnsafeMutableBytes {
                _ = try s.readVariant(precision, of: key, model: model, into: $0, threads: threads)
            }
            return out
        }
    }
}

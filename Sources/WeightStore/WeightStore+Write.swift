import WStoreCore

extension WeightStore {
    /// Lent to a ``WeightStore/write(_:)`` closure: every change made through it
    /// commits together when the closure returns, or not at all when it throws.
    public struct Writer: ~Copyable {
        let txn: WriteTransaction
        let store: WeightStore

        /// Stores a tensor, replacing any tensor of that name in `model`.
        ///
        /// - Parameters:
        ///   - bytes: the tensor's bytes, little-endian, C order.
        ///   - codec: ``CodecChoice/auto`` compresses byte-grouped planes with zstd and
        ///     keeps the record raw (zero-copy readable) when that saves under 5%.
        ///   - expert: also index the tensor as this part of an MoE expert.
        ///   - variants: with `expert`, also store these quantized copies of the part
        ///     (FORMAT.md §8); a part that is not f32/f16/bf16 or whose last dimension is not a
        ///     multiple of 32 gets none.
        /// - Throws: ``WStoreError/invalidArgument(_:)`` for a bad name, a size that does not
        ///   match the shape, or weights with an infinity or NaN to quantize; ``LMDBError`` from LMDB.
        @discardableResult
        public func put(
            _ name: String, model: String = WeightStore.defaultModel, dtype: DType, shape: [Int],
            bytes: UnsafeRawBufferPointer, codec: CodecChoice = .auto, level: Int = 3,
            expert: ExpertKey? = nil, variants: [ExpertPrecision] = []
        ) throws -> TensorInfo {
            var options = store.encodeOptions
            options.codec = codec
            options.level = Int32(level)
            let binding = try store.recordBinding(model: model, name: name)
            let record = try RecordEncoder.encode(bytes, dtype: dtype, shape: shape, binding: binding, options: options)
            let encoded =
                try expert.map {
                    try store.encodeVariants(
                        bytes, dtype: dtype, shape: shape, precisions: variants, of: $0, model: model, options: options)
                } ?? []
            let info = try putEncoded(
                record, source: bytes, name: name, model: model, dtype: dtype, shape: shape, expert: expert)
            for v in encoded { try putVariant(v, model: model) }
            return info
        }

        /// Writes a variant from ``WeightStore/encodeVariants(_:dtype:shape:precisions:of:model:options:threads:)``.
        @discardableResult
        package func putVariant(_ v: EncodedVariant, model: String) throws -> VariantInfo {
            try v.blocks.withUnsafeBytes {
                try putVariantEncoded(
                    v.record, blocks: $0, precision: v.precision, of: v.key, model: model, shape: v.shape)
            }
        }

        /// Writes a record encoded beforehand (so compression can run outside the transaction).
        ///
        /// `sourceFile`, when given, is where `source` lies in a file: a descriptor open for
        /// reading, the offset of `source`'s first byte in it, and its path. A raw record's
        /// payload is then copied from that file inside the kernel (copy_file_range(2)),
        /// page cache to page cache, without mapping or copying `source` through this
        /// process; the bytes must be the same (its checksum was computed from `source`).
        @discardableResult
        package func putEncoded(
            _ record: EncodedRecord, source: UnsafeRawBufferPointer, name: String, model: String,
            dtype: DType, shape: [Int], expert: ExpertKey? = nil,
            sourceFile: (descriptor: Int32, offset: Int, path: String)? = nil
        ) throws -> TensorInfo {
            let key = try store.tensorKey(model: model, name: name)
            guard record.binding == Record.binding(key: key) else {
                preconditionFailure("record of \(model)/\(name) encoded for another key")
            }
            let env = store.env
            try txn.reserve(store.tensorsDB, key, size: record.totalSize) { dst in
                // With MDB_WRITEMAP, `dst` is in the map: the record is written into the
                // file's own pages, and its pages leave this process once written (they
                // stay dirty in the page cache; madvise(MADV_DONTNEED) of a shared file
                // mapping keeps the data).
                // The payload is written with pwrite (or copied from its file) at the same
                // place in the file: the same pages, without a fault for each.
                if env.writeMap, let offset = env.fileOffset(of: UnsafeRawBufferPointer(dst)) {
                    try record.write(into: dst, source: source) { bytes, at in
                        if record.payload == nil, let file = sourceFile,
                            try env.copyIntoFile(
                                from: file.descriptor, at: file.offset + (bytes.baseAddress! - source.baseAddress!),
                                sourcePath: file.path, count: bytes.count, to: offset + at)
                        {
                            return
                        }
                        try env.writeFile(bytes, at: offset + at)
                    }
                    PageCache.unmapPages(UnsafeRawBufferPointer(dst))
                } else {
                    record.write(into: dst, source: source)
                }
            }
            if let expert { try setExpert(expert, tensor: name, model: model) }
            return TensorInfo(
                model: model, name: name, dtype: dtype, shape: shape,
                codec: record.codec.name, rawSize: record.rawSize, storedSize: record.storedSize,
                checksum: record.checksum,
                frameCount: record.codec == .zstd
                    ? (record.rawSize + store.encodeOptions.frameSize - 1) / store.encodeOptions.frameSize : 0)
        }

        /// Indexes tensor `name` as part `key.part` of expert `(key.layer, key.expert)`.
        public func setExpert(_ key: ExpertKey, tensor name: String, model: String = WeightStore.defaultModel) throws {
            try WeightStore.checkExpertIndex(key)
            let ek = Keys.expert(model: model, key)
            guard ek.count <= store.env.maxKeySize else {
                throw WStoreError.invalidArgument("expert part name too long: \(key.part)")
            }
            try store.seal(Array(name.utf8), key: ek).withUnsafeBytes { try txn.put(store.expertsDB, ek, $0) }
        }

        /// Removes tensor `name` (and nothing else); returns whether it existed.
        @discardableResult
        public func delete(_ name: String, model: String = WeightStore.defaultModel) throws -> Bool {
            try txn.delete(store.tensorsDB, store.tensorKey(model: model, name: name))
        }
    }

    /// Runs `body` in one write transaction and commits it.
    ///
    /// The map grows by itself: if it fills, the transaction is rolled back and `body`
    /// runs again, so `body` should only write through the writer.
    /// - Warning: do not call from inside a read (``withSnapshot(_:)``) closure.
    public func write<R>(_ body: (borrowing Writer) throws -> R) throws -> R {
        try requireWritable()
        return try env.write { txn in
            let writer = Writer(txn: txn.view(), store: self)
            return try body(writer)
        }
    }

    /// Stores one tensor in its own transaction; see ``Writer/put(_:model:dtype:shape:bytes:codec:level:expert:variants:)``.
    @discardableResult
    public func put(
        _ name: String, model: String = WeightStore.defaultModel, dtype: DType, shape: [Int],
        bytes: UnsafeRawBufferPointer, codec: CodecChoice = .auto, level: Int = 3,
        expert: ExpertKey? = nil, variants: [ExpertPrecision] = []
    ) throws -> TensorInfo {
        var options = encodeOptions
        options.codec = codec
        options.level = Int32(level)
        options.threads = System.activeProcessorCount
        let record = try RecordEncoder.encode(
            bytes, dtype: dtype, shape: shape,
            binding: recordBinding(model: model, name: name), options: options)
        let encoded =
            try expert.map {
                try encodeVariants(
                    bytes, dtype: dtype, shape: shape, precisions: variants, of: $0, model: model, options: options,
                    threads: options.threads)
            } ?? []
        return try write { w in
            let info = try w.putEncoded(
                record, source: bytes, name: name, model: model, dtype: dtype, shape: shape, expert: expert)
            for v in encoded { try w.putVariant(v, model: model) }
            return info
        }
    }

    /// Encoding options for this store (the record padding depends on its page size).
    package var encodeOptions: EncodeOptions {
        var o = EncodeOptions()
        o.minRecordSize = minRecordSize
        return o
    }

    /// What binds the record of tensor `name` to its key: give it to the encoder
    /// (``Record/binding(key:)`` of the `tensors` key).
    package func recordBinding(model: String, name: String) throws -> UInt64 {
        Record.binding(key: try tensorKey(model: model, name: name))
    }

    /// Layer and expert must fit the u32 fields of `experts` and `variants` keys.
    static func checkExpertIndex(_ key: ExpertKey) throws {
        guard key.layer >= 0, key.expert >= 0, key.layer <= Int(UInt32.max), key.expert <= Int(UInt32.max) else {
            throw WStoreError.invalidArgument("expert index \(key) out of range")
        }
    }

    func tensorKey(model: String, name: String) throws -> [UInt8] {
        guard !name.isEmpty else { throw WStoreError.invalidArgument("empty tensor name") }
        guard !model.isEmpty, !model.utf8.contains(0) else {
            throw WStoreError.invalidArgument("model name must be non-empty and without NUL")
        }
        let key = Keys.tensor(model: model, name: name)
        guard key.count <= env.maxKeySize else {
            throw WStoreError.invalidArgument(
                "model and tensor name take \(key.count) bytes; LMDB keys are limited to \(env.maxKeySize)")
        }
        return key
    }
}

extension TensorInfo {
    init(
        model: String, name: String, dtype: DType, shape: [Int], codec: String, rawSize: Int, storedSize: Int,
        checksum: UInt64, frameCount: Int
    ) {
        self.model = model
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.codec = codec
        self.rawSize = rawSize
        self.storedSize = storedSize
        self.checksum = checksum
        self.frameCount = frameCount
    }
}

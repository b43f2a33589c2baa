import Synchronization
import WStoreCore
import WStoreKernels

/// Quantized copies of expert parts, made at pack time (format-spec/FORMAT.md §8).
package enum VariantQuantizer {
    /// Why a part gets no variant; `nil` when it can have one.
    package static func ineligibility(dtype: DType, shape: [Int]) -> String? {
        guard floatType(dtype) != nil else { return "dtype \(dtype) is not f32, f16 or bf16" }
        guard let last = shape.last, last > 0 else { return "shape \(shape) has no last dimension" }
        guard last % BlockKernels.elementsPerBlock == 0 else {
            return "last dimension \(last) is not a multiple of \(BlockKernels.elementsPerBlock)"
        }
        return nil
    }

    static func floatType(_ dtype: DType) -> BlockKernels.FloatType? {
        switch dtype {
        case .f32: .f32
        case .f16: .f16
        case .bf16: .bf16
        default: nil
        }
    }

    static func blockType(_ precision: ExpertPrecision) -> BlockKernels.BlockType? {
        switch precision {
        case .exact: nil
        case .q8_0: .q8_0
        case .q4_0: .q4_0
        }
    }

    /// The blocks of `precision` for a part of `dtype` and `shape` with bytes `source`, on up to
    /// `threads` threads; `nil` when the part is not eligible (``ineligibility(dtype:shape:)``).
    /// - Throws: ``WStoreError/invalidArgument(_:)`` when the bytes do not match the shape, or
    ///   when a block's scale is not finite (an infinity or NaN in the weights).
    package static func quantize(
        _ source: UnsafeRawBufferPointer, dtype: DType, shape: [Int], precision: ExpertPrecision,
        threads: Int = 1, reference: Bool = false
    ) throws -> [UInt8]? {
        guard ineligibility(dtype: dtype, shape: shape) == nil, let ft = floatType(dtype),
            let bt = blockType(precision), let bytes = precision.blockDType?.blockByteCount(shape: shape)
        else { return nil }
        let elements = source.count / ft.size
        guard elements * ft.size == source.count, elements / BlockKernels.elementsPerBlock * bt.blockBytes == bytes
        else {
            throw WStoreError.invalidArgument("shape \(shape) of \(dtype) does not take \(source.count) bytes")
        }
        var out = [UInt8](repeating: 0, count: bytes)
        let blocks = elements / BlockKernels.elementsPerBlock
        // Chunks of 8192 blocks (256 Ki elements) spread over the threads.
        let chunk = 8192
        let chunks = (blocks + chunk - 1) / chunk
        let bad = Atomic(0)
        try out.withUnsafeMutableBytes { dst in
            let d = UncheckedSendable(dst)
            try parallelFor(chunks, threads: threads) { c, _ in
                let b0 = c * chunk, b1 = min(blocks, b0 + chunk)
                let n = BlockKernels.quantize(
                    bt, from: source.baseAddress! + b0 * BlockKernels.elementsPerBlock * ft.size, as: ft,
                    count: (b1 - b0) * BlockKernels.elementsPerBlock,
                    into: d.value.baseAddress! + b0 * bt.blockBytes, reference: reference)
                if n > 0 { bad.add(n, ordering: .relaxed) }
            }
        }
        guard bad.load(ordering: .relaxed) == 0 else {
            throw WStoreError.invalidArgument(
                "\(bad.load(ordering: .relaxed)) blocks of \(precision) have no finite scale (an infinity or NaN in the weights)"
            )
        }
        return out
    }
}

extension VariantQuantizer {
    /// As ``quantize(_:dtype:shape:precision:threads:reference:)`` with ggml's scalar reference
    /// code on one thread (for benchmarks and tests); throws where that returns `nil`.
    package static func quantizeReference(
        _ source: UnsafeRawBufferPointer, dtype: DType, shape: [Int], precision: ExpertPrecision
    ) throws -> [UInt8] {
        guard let out = try quantize(source, dtype: dtype, shape: shape, precision: precision, reference: true) else {
            throw WStoreError.invalidArgument("no \(precision) blocks for \(dtype) \(shape)")
        }
        return out
    }
}

extension WeightStore.Writer {
    /// Stores `blocks`, already quantized as `precision`, as the variant of expert part `key`
    /// whose logical element shape is `shape` (the exact part's shape), replacing any such
    /// variant. The part should be indexed (``setExpert(_:tensor:model:)``); `wstore verify`
    /// reports a variant whose part is not.
    ///
    /// - Throws: ``WStoreError/invalidArgument(_:)`` for ``ExpertPrecision/exact``, a part name
    ///   with a NUL, or a byte count that does not match the shape; ``LMDBError`` from LMDB.
    @discardableResult
    public func putVariant(
        _ precision: ExpertPrecision, of key: ExpertKey, model: String = WeightStore.defaultModel,
        blocks: UnsafeRawBufferPointer, shape: [Int], codec: CodecChoice = .auto
    ) throws -> VariantInfo {
        let vk = try store.variantKey(model: model, key, precision)
        var options = store.encodeOptions
        options.codec = codec
        let record = try RecordEncoder.encode(
            blocks, dtype: precision.blockDType!, shape: shape, binding: Record.binding(key: vk), options: options)
        return try putVariantEncoded(record, blocks: blocks, precision: precision, of: key, model: model, shape: shape)
    }

    /// Writes a variant record encoded beforehand (by ``WeightStore/encodeVariant(_:precision:of:model:shape:options:)``).
    @discardableResult
    package func putVariantEncoded(
        _ record: EncodedRecord, blocks: UnsafeRawBufferPointer, precision: ExpertPrecision, of key: ExpertKey,
        model: String, shape: [Int]
    ) throws -> VariantInfo {
        let vk = try store.variantKey(model: model, key, precision)
        guard record.binding == Record.binding(key: vk) else {
            preconditionFailure("variant \(precision) of \(model)/\(key) encoded for another key")
        }
        guard let db = store.variantsDB else { preconditionFailure("a writable store without a variants database") }
        try txn.reserve(db, vk, size: record.totalSize) { dst in record.write(into: dst, source: blocks) }
        return VariantInfo(
            model: model, key: key, precision: precision, dtype: precision.blockDType!, shape: shape,
            codec: record.codec.name, rawSize: record.rawSize, storedSize: record.storedSize,
            checksum: record.checksum)
    }

    /// Removes the variant `precision` of expert part `key`; returns whether it existed.
    @discardableResult
    public func deleteVariant(
        _ precision: ExpertPrecision, of key: ExpertKey, model: String = WeightStore.defaultModel
    ) throws -> Bool {
        guard let db = store.variantsDB else { return false }
        return try txn.delete(db, store.variantKey(model: model, key, precision))
    }
}

extension WeightStore {
    /// A variant's record, quantized and encoded outside any transaction: give both to
    /// ``Writer/putVariantEncoded(_:blocks:precision:of:model:shape:)``.
    package struct EncodedVariant: Sendable {
        package let key: ExpertKey
        package let precision: ExpertPrecision
        package let shape: [Int]
        package let blocks: [UInt8]
        package let record: EncodedRecord
    }

    /// Quantizes part bytes `source` as every precision of `precisions` the part is eligible
    /// for, and encodes each as a record bound to its `variants` key.
    package func encodeVariants(
        _ source: UnsafeRawBufferPointer, dtype: DType, shape: [Int], precisions: [ExpertPrecision],
        of key: ExpertKey, model: String, options: EncodeOptions, threads: Int = 1
    ) throws -> [EncodedVariant] {
        var out: [EncodedVariant] = []
        for p in precisions where p != .exact {
            guard
                let blocks = try VariantQuantizer.quantize(
                    source, dtype: dtype, shape: shape, precision: p, threads: threads)
            else { continue }
            let vk = try variantKey(model: model, key, p)
            let record = try blocks.withUnsafeBytes {
                try RecordEncoder.encode(
                    $0, dtype: p.blockDType!, shape: shape, binding: Record.binding(key: vk),
                    options: Self.variantOptions(options, blocks: $0))
            }
            out.append(EncodedVariant(key: key, precision: p, shape: shape, blocks: blocks, record: record))
        }
        return out
    }

    /// Quantized blocks seldom compress (int8 codes of weights are close to their entropy): under
    /// ``CodecChoice/auto``, zstd is tried on the first 64 KiB only, and a variant whose sample
    /// saves under 5% is stored raw without compressing the rest.
    static func variantOptions(_ options: EncodeOptions, blocks: UnsafeRawBufferPointer) throws -> EncodeOptions {
        let probe = 64 << 10
        guard options.codec == .auto, blocks.count > probe else { return options }
        var o = options
        o.threads = 1
        o.minRecordSize = 0
        let sample = try RecordEncoder.encode(
            UnsafeRawBufferPointer(rebasing: blocks[0 ..< probe]), dtype: .u8, shape: [probe], binding: 0, options: o)
        var out = options
        if sample.codec == .raw { out.codec = .raw }
        return out
    }

    /// The `variants` key of `key`'s variant `precision`, checked.
    func variantKey(model: String, _ key: ExpertKey, _ precision: ExpertPrecision) throws -> [UInt8] {
        guard precision != .exact else {
            throw WStoreError.invalidArgument("the exact precision is the part's own tensor, not a variant")
        }
        guard !model.isEmpty, !model.utf8.contains(0) else {
            throw WStoreError.invalidArgument("model name must be non-empty and without NUL")
        }
        try WeightStore.checkExpertIndex(key)
        guard !key.part.utf8.contains(0) else { throw WStoreError.invalidArgument("expert part name with a NUL") }
        let k = Keys.variant(model: model, key, precision)
        guard k.count <= env.maxKeySize else {
            throw WStoreError.invalidArgument("expert part name too long: \(key.part)")
        }
        return k
    }
}

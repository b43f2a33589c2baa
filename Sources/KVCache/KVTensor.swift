import WStoreCore

/// One KV tensor, `[heads, tokens, headDim]`, row-major, in f16, bf16 or f32.
public struct KVTensor: Sendable, Equatable {
    /// The element type: `.f16`, `.bf16` or `.f32`.
    public let dtype: DType
    /// Heads (KV heads for keys and values, query heads for queries).
    public let heads: Int
    /// Token positions.
    public let tokens: Int
    /// Elements per head and token.
    public let headDim: Int
    /// The elements, little-endian, `heads × tokens × headDim × dtype size` bytes.
    public let bytes: [UInt8]

    /// The dtypes a KV tensor may have.
    public static let supportedDTypes: [DType] = [.f16, .bf16, .f32]

    /// Wraps `bytes` as a tensor of the given shape.
    /// - Throws: ``WStoreError/invalidArgument(_:)`` for another dtype or a size that does not match the shape.
    public init(dtype: DType, heads: Int, tokens: Int, headDim: Int, bytes: [UInt8]) throws {
        guard KVTensor.supportedDTypes.contains(dtype) else {
            throw WStoreError.invalidArgument("KV tensors are f16, bf16 or f32, not \(dtype)")
        }
        guard heads >= 0, tokens >= 0, headDim >= 0 else {
            throw WStoreError.invalidArgument("negative KV tensor dimension")
        }
        let (ht, o1) = heads.multipliedReportingOverflow(by: tokens)
        let (htd, o2) = ht.multipliedReportingOverflow(by: headDim)
        let (need, o3) = htd.multipliedReportingOverflow(by: dtype.elementSize!)
        guard !o1, !o2, !o3, bytes.count == need else {
            throw WStoreError.invalidArgument(
                "KV tensor [\(heads), \(tokens), \(headDim)] of \(dtype) needs \(need) bytes, got \(bytes.count)")
        }
        self.dtype = dtype
        self.heads = heads
        self.tokens = tokens
        self.headDim = headDim
        self.bytes = bytes
    }

    /// A tensor of `floats` (`heads × tokens × headDim`) rounded to `dtype`.
    public init(floats: [Float], dtype: DType, heads: Int, tokens: Int, headDim: Int) throws {
        try self.init(
            dtype: dtype, heads: heads, tokens: tokens, headDim: headDim,
            bytes: FloatCodec.encode(floats, as: dtype))
    }

    /// Bytes per element.
    public var elementSize: Int { dtype.elementSize! }
    /// The shape, `[heads, tokens, headDim]`.
    public var shape: [Int] { [heads, tokens, headDim] }

    /// Whether any element is NaN or infinite (its exponent bits all set), a scan of the bytes.
    public var hasNonFinite: Bool {
        bytes.withUnsafeBytes { raw in
            switch dtype {
            case .f32:
                return raw.withMemoryRebound(to: UInt32.self) {
                    $0.contains { UInt32(littleEndian: $0) & 0x7F80_0000 == 0x7F80_0000 }
                }
            case .f16:
                return raw.withMemoryRebound(to: UInt16.self) {
                    $0.contains { UInt16(littleEndian: $0) & 0x7C00 == 0x7C00 }
                }
            default:
                return raw.withMemoryRebound(to: UInt16.self) {
                    $0.contains { UInt16(littleEndian: $0) & 0x7F80 == 0x7F80 }
                }
            }
        }
    }

    /// The elements as floats.
    public func floats() -> [Float] { FloatCodec.decode(bytes, from: dtype) }

    /// The token positions `range` of every head.
    public func slice(tokens range: Range<Int>) -> KVTensor {
        precondition(range.lowerBound >= 0 && range.upperBound <= tokens)
        let row = headDim * elementSize, n = range.count
        // Every byte is written by one copy below, so the array starts uninitialized.
        let out = [UInt8](unsafeUninitializedCapacity: heads * n * row) { dst, count in
            count = dst.count
            bytes.withUnsafeBytes { src in
                for h in 0 ..< heads where n * row > 0 {
                    (UnsafeMutableRawPointer(dst.baseAddress!) + h * n * row).copyMemory(
                        from: src.baseAddress! + (h * tokens + range.lowerBound) * row, byteCount: n * row)
                }
            }
        }
        return try! KVTensor(dtype: dtype, heads: heads, tokens: n, headDim: headDim, bytes: out)
    }

    /// Concatenates tensors of the same dtype, heads and head size along tokens.
    /// - Throws: ``WStoreError/invalidArgument(_:)`` when they disagree.
    public static func concatenate(_ parts: [KVTensor]) throws -> KVTensor {
        guard let first = parts.first else { throw WStoreError.invalidArgument("nothing to concatenate") }
        for p in parts where p.dtype != first.dtype || p.heads != first.heads || p.headDim != first.headDim {
            throw WStoreError.invalidArgument("KV tensors to concatenate differ in dtype, heads or head size")
        }
        let total = parts.reduce(0) { $0 + $1.tokens }, row = first.headDim * first.elementSize
        // Every byte is written by exactly one copy below (the parts' tokens add up to `total`
        // for every head), so the array starts uninitialized rather than zeroed.
        let size = first.heads * total * row
        let out = [UInt8](unsafeUninitializedCapacity: size) {
            (dst: inout UnsafeMutableBufferPointer<UInt8>, count: inout Int) in
            var at = 0
            for p in parts {
                p.bytes.withUnsafeBytes { src in
                    for h in 0 ..< p.heads where p.tokens > 0 && row > 0 {
                        let to = UnsafeMutableRawPointer(dst.baseAddress!) + (h * total + at) * row
                        to.copyMemory(from: src.baseAddress! + h * p.tokens * row, byteCount: p.tokens * row)
                    }
                }
                at += p.tokens
            }
            count = size
        }
        return try KVTensor(dtype: first.dtype, heads: first.heads, tokens: total, headDim: first.headDim, bytes: out)
    }

    /// For each output head `o`, the rows `positions[o]` of source head `o / (outHeads / heads)`:
    /// the keys or values SnapKV keeps.
    /// - Throws: ``WStoreError/invalidArgument(_:)`` unless there is a multiple of ``heads``
    ///   lists of positions, all of the same length, every position below ``tokens``.
    public func gather(positions: [[Int32]]) throws -> KVTensor {
        let outHeads = positions.count
        guard heads > 0, outHeads > 0, outHeads % heads == 0 else {
            throw WStoreError.invalidArgument(
                "\(outHeads) lists of positions for a tensor of \(heads) heads: need a multiple")
        }
        let group = outHeads / heads, n = positions[0].count, row = headDim * elementSize
        for p in positions {
            guard p.count == n else {
                throw WStoreError.invalidArgument("lists of positions of different lengths (\(n) and \(p.count))")
            }
            guard p.allSatisfy({ $0 >= 0 && Int($0) < tokens }) else {
                throw WStoreError.invalidArgument("a position outside 0..<\(tokens)")
            }
        }
        var out = [UInt8](repeating: 0, count: outHeads * n * row)
        bytes.withUnsafeBytes { src in
            out.withUnsafeMutableBytes { dst in
                for o in 0 ..< outHeads {
                    let h = o / group
                    for (i, p) in positions[o].enumerated() {
                        (dst.baseAddress! + (o * n + i) * row).copyMemory(
                            from: src.baseAddress! + (h * tokens + Int(p)) * row, byteCount: row)
                    }
                }
            }
        }
        return try! KVTensor(dtype: dtype, heads: outHeads, tokens: n, headDim: headDim, bytes: out)
    }
}

/// One layer of a KV cache: keys and values of the same shape and dtype.
public struct KVLayer: Sendable, Equatable {
    /// `[kvHeads, tokens, headDim]`.
    public let keys: KVTensor
    /// `[kvHeads, tokens, headDim]`.
    public let values: KVTensor

    /// Pairs `keys` and `values`.
    /// - Throws: ``WStoreError/invalidArgument(_:)`` when their shapes or dtypes differ.
    public init(keys: KVTensor, values: KVTensor) throws {
        guard keys.shape == values.shape, keys.dtype == values.dtype else {
            throw WStoreError.invalidArgument(
                "keys \(keys.shape) \(keys.dtype) and values \(values.shape) \(values.dtype) differ")
        }
        self.keys = keys
        self.values = values
    }

    /// Token positions in this layer.
    public var tokens: Int { keys.tokens }
}

/// A whole KV cache: one ``KVLayer`` per transformer layer, all of the same token count.
public struct KVCacheData: Sendable, Equatable {
    /// The layers, in order.
    public let layers: [KVLayer]

    /// Wraps `layers`.
    /// - Throws: ``WStoreError/invalidArgument(_:)`` when there are none or their token counts differ.
    public init(layers: [KVLayer]) throws {
        guard let first = layers.first else { throw WStoreError.invalidArgument("a KV cache needs at least one layer") }
        guard layers.allSatisfy({ $0.tokens == first.tokens }) else {
            throw WStoreError.invalidArgument("KV layers hold different token counts")
        }
        self.layers = layers
    }

    /// Token positions.
    public var tokens: Int { layers[0].tokens }

    /// Raw bytes of keys and values over all layers.
    public var byteCount: Int { layers.reduce(0) { $0 + $1.keys.bytes.count + $1.values.bytes.count } }

    /// Token positions `range` of every layer.
    public func slice(tokens range: Range<Int>) -> KVCacheData {
        try! KVCacheData(
            layers: layers.map {
                try! KVLayer(keys: $0.keys.slice(tokens: range), values: $0.values.slice(tokens: range))
            })
    }

    /// Joins caches along tokens.
    /// - Throws: ``WStoreError/invalidArgument(_:)`` when their layers disagree.
    public static func concatenate(_ parts: [KVCacheData]) throws -> KVCacheData {
        guard let first = parts.first else { throw WStoreError.invalidArgument("nothing to concatenate") }
        guard parts.allSatisfy({ $0.layers.count == first.layers.count }) else {
            throw WStoreError.invalidArgument("KV caches to concatenate have different layer counts")
        }
        return try KVCacheData(
            layers: (0 ..< first.layers.count).map { l in
                try KVLayer(
                    keys: KVTensor.concatenate(parts.map { $0.layers[l].keys }),
                    values: KVTensor.concatenate(parts.map { $0.layers[l].values }))
            })
    }
}

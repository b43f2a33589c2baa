import Synchronization
import WStoreCore

/// One layer of a caller's KV buffers: element (token `t`, head `h`, dim `d`) of the keys at
/// `keys + t * tokenStride + h * headStride + d * elementSize`, and likewise for the values.
/// Each head's `headDim` elements of one token are contiguous.
///
/// - Warning: the pointers are the caller's; wstore reads (store) or writes (lookup) them
///   only during the call they are passed to, and keeps none.
public struct KVLayerView: @unchecked Sendable {
    /// Keys of token 0, head 0.
    public var keys: UnsafeMutableRawPointer
    /// Values of token 0, head 0.
    public var values: UnsafeMutableRawPointer
    /// `.f16`, `.bf16` or `.f32`.
    public var dtype: DType
    /// KV heads.
    public var kvHeads: Int
    /// Elements per head and token.
    public var headDim: Int
    /// Bytes from token `t` to token `t + 1` of one head.
    public var tokenStride: Int
    /// Bytes from head `h` to head `h + 1` at one token.
    public var headStride: Int

    /// Describes one layer's buffers; `headStride` 0 means `headDim × element size`
    /// (the `[tokens][heads][headDim]` layout).
    public init(
        keys: UnsafeMutableRawPointer, values: UnsafeMutableRawPointer, dtype: DType, kvHeads: Int, headDim: Int,
        tokenStride: Int, headStride: Int = 0
    ) {
        self.keys = keys
        self.values = values
        self.dtype = dtype
        self.kvHeads = kvHeads
        self.headDim = headDim
        self.tokenStride = tokenStride
        self.headStride = headStride == 0 ? headDim * (dtype.elementSize ?? 0) : headStride
    }

    package func rows(_ keysOrValues: Int, from token: Int) -> KVRows {
        KVRows(
            base: (keysOrValues == 0 ? keys : values) + token * tokenStride, tokenStride: tokenStride,
            headStride: headStride)
    }
}

/// Last uses seen by lookups and not yet written, in the order they happened, and the
/// lookup counters of one handle.
struct PendingUses {
    private var order: [UInt64: UInt64] = [:]
    private var sequence: UInt64 = 0
    var lookups = 0, askedTokens = 0, hitTokens = 0, damaged = 0

    /// Records that `keys` were used, in order, now.
    mutating func stamp(_ keys: some Sequence<UInt64>) {
        for k in keys {
            sequence += 1
            order[k] = sequence
        }
    }

    /// Hands over every pending key, oldest use first, and forgets them.
    mutating func take() -> [UInt64] {
        defer { order = [:] }
        return order.sorted { $0.value < $1.value }.map(\.key)
    }

    /// Puts back keys a failed write did not record (as used now, if not used since).
    mutating func restore(_ keys: [UInt64]) {
        for k in keys where order[k] == nil {
            sequence += 1
            order[k] = sequence
        }
    }
}

extension KVStore {
    /// What ``lookup(tokens:model:salt:into:)`` delivered.
    public struct Delivered: Sendable {
        /// Leading tokens written into the caller's buffers, whole chunks.
        public var tokens: Int
        /// Chunks delivered.
        public var chunks: Int
        /// The damage of the chunk that ended the prefix early, if any.
        public var damage: WStoreError?
    }

    /// The number of leading tokens of `tokens` cached (whole chunks), decoding nothing
    /// and writing nothing.
    public func probe(tokens: [UInt32], model: String, salt: String = "") throws -> Int {
        try cachedChunks(tokens: tokens, model: model, salt: salt) * options.chunkTokens
    }

    /// Finds the longest cached prefix of `tokens` in whole chunks and decodes it, every
    /// checksum checked, on a read transaction (in parallel with other lookups and a
    /// writer). Each tensor is decoded straight into its place in the result.
    ///
    /// A damaged chunk ends the prefix there: the chunks before it are returned and the
    /// damage is in ``Lookup/damage`` (damaged bytes are never returned).
    /// - Throws: ``WStoreError/invalidArgument(_:)`` when the chunks of one prefix disagree
    ///   in shape, ``LMDBError`` from LMDB.
    public func lookup(tokens: [UInt32], model: String, salt: String = "") throws -> Lookup {
        let keys = PrefixKey.chain(tokens: tokens, chunkTokens: options.chunkTokens, model: model, salt: salt)
        let found: Lookup = try env.withRead { txn in
            let (values, infos, headerDamage) = try chunksOfPrefix(txn, keys)
            guard let first = infos.first else { return Lookup(tokens: 0, kv: nil, chunks: 0, damage: headerDamage) }
            let n = infos.count, t = first.tokens, row = first.headDim * first.dtype.elementSize!
            let damagedAt = Mutex<(chunk: Int, error: WStoreError?)>((n, headerDamage))
            var tensors: [[UInt8]] = []
            tensors.reserveCapacity(2 * first.layers)
            for i in 0 ..< 2 * first.layers {
                let limit = damagedAt.withLock { $0.chunk }
                let size = first.kvHeads * limit * t * row
                tensors.append(
                    try [UInt8](unsafeUninitializedCapacity: size) { b, count in
                        count = size
                        guard size > 0 else { return }
                        let base = UnsafeMutableRawPointer(b.baseAddress!)
                        try parallelFor(limit, threads: options.threads) { c, _ in
                            let rows = KVRows(base: base + c * t * row, tokenStride: row, headStride: limit * t * row)
                            do {
                                try KVChunk.decodeTensor(
                                    values[c], infos[c], i, key: keys[c], name: "KV chunk \(hex(keys[c]))", into: rows)
                            } catch let e as WStoreError {
                                damagedAt.withLock { if c < $0.chunk { $0 = (c, e) } }
                            }
                        }
                    })
            }
            let (good, damage) = damagedAt.withLock { $0 }
            guard good > 0 else { return Lookup(tokens: 0, kv: nil, chunks: 0, damage: damage) }
            var layers: [KVLayer] = []
            for l in 0 ..< first.layers {
                func tensor(_ i: Int) throws -> KVTensor {
                    let full = try KVTensor(
                        dtype: first.dtype, heads: first.kvHeads, tokens: tensors[i].count / (first.kvHeads * row),
                        headDim: first.headDim, bytes: tensors[i])
                    return full.tokens == good * t ? full : full.slice(tokens: 0 ..< good * t)
                }
                layers.append(try KVLayer(keys: tensor(2 * l), values: tensor(2 * l + 1)))
            }
            return Lookup(tokens: good * t, kv: try KVCacheData(layers: layers), chunks: good, damage: damage)
        }
        noteLookup(keys, asked: tokens.count, found.chunks, damaged: found.damage != nil)
        // Where the local prefix ends intact, the shared remote tier may continue it
        // (outside the read transaction: its chunks are written into the local tier).
        guard remote != nil, found.damage == nil else { return found }
        let more = try remoteContinuation(
            keys: keys, localChunks: found.chunks, target: .tensors(shape: found.kv.map(Shape.init)), model: model
        ).parts
        guard !more.isEmpty else { return found }
        let kv = try KVCacheData.concatenate((found.kv.map { [$0] } ?? []) + more)
        return Lookup(tokens: kv.tokens, kv: kv, chunks: found.chunks + more.count, remoteChunks: more.count)
    }

    /// Finds the longest cached prefix of `tokens` and decodes it straight into the
    /// caller's buffers `layers` (one view per layer, holding `tokens.count` tokens), every
    /// checksum checked, on a read transaction. Tokens past the prefix are not written,
    /// except by a remote tier: its chunks are decoded straight into their place as they
    /// arrive, so after a remote chunk that failed its checks the rows past the prefix
    /// delivered may hold unspecified bytes.
    ///
    /// A damaged chunk ends the prefix there: the chunks before it are delivered and the
    /// damage is in ``Delivered/damage`` (the rows of the damaged chunk then hold
    /// unspecified bytes).
    /// - Throws: ``WStoreError/invalidArgument(_:)`` when `layers` do not match the stored
    ///   chunks (count, dtype, heads, head size), ``LMDBError``.
    public func lookup(tokens: [UInt32], model: String, salt: String = "", into layers: [KVLayerView]) throws
        -> Delivered
    {
        let keys = PrefixKey.chain(tokens: tokens, chunkTokens: options.chunkTokens, model: model, salt: salt)
        let delivered: Delivered = try env.withRead { txn in
            let (values, infos, headerDamage) = try chunksOfPrefix(txn, keys)
            guard let first = infos.first else { return Delivered(tokens: 0, chunks: 0, damage: headerDamage) }
            guard layers.count == first.layers,
                layers.allSatisfy({
                    $0.dtype == first.dtype && $0.kvHeads == first.kvHeads && $0.headDim == first.headDim
                })
            else {
                let l = layers.first
                throw WStoreError.invalidArgument(
                    "the buffers describe \(layers.count) layers of \(l.map { "\($0.kvHeads) heads × \($0.headDim) \($0.dtype)" } ?? "nothing"); "
                        + "the stored chunks hold \(first.layers) layers of \(first.kvHeads) heads × \(first.headDim) \(first.dtype)"
                )
            }
            let t = first.tokens
            for (c, info) in infos.enumerated() {
                do {
                    try parallelFor(2 * info.layers, threads: options.threads) { i, _ in
                        try KVChunk.decodeTensor(
                            values[c], info, i, key: keys[c], name: "KV chunk \(hex(keys[c]))",
                            into: layers[i / 2].rows(i % 2, from: c * t))
                    }
                } catch let e as WStoreError {
                    return Delivered(tokens: c * t, chunks: c, damage: e)
                }
            }
            return Delivered(tokens: infos.count * t, chunks: infos.count, damage: headerDamage)
        }
        noteLookup(keys, asked: tokens.count, delivered.chunks, damaged: delivered.damage != nil)
        guard remote != nil, delivered.damage == nil else { return delivered }
        // Remote chunks are decoded straight into the buffers, at their place in the prompt.
        let more = try remoteContinuation(
            keys: keys, localChunks: delivered.chunks, target: .buffers(layers), model: model)
        var out = delivered
        out.tokens += more.chunks * options.chunkTokens
        out.chunks += more.chunks
        return out
    }

    /// The chunk values of the longest cached prefix of `keys`, with their checked
    /// headers; a damaged or mismatched header ends the prefix (its error is returned).
    /// lmdb.h: the values are valid until the read transaction ends.
    private func chunksOfPrefix(_ txn: borrowing ReadTransaction, _ keys: [UInt64])
        throws -> ([UnsafeRawBufferPointer], [KVChunk.Info], WStoreError?)
    {
        var values: [UnsafeRawBufferPointer] = [], infos: [KVChunk.Info] = []
        for k in keys {
            guard let v = try txn.get(chunks, PrefixKey.bytes(k)) else { break }
            do {
                let info = try KVChunk.info(v, key: k, name: "KV chunk \(hex(k))")
                if let f = infos.first,
                    info.layers != f.layers || info.dtype != f.dtype || info.kvHeads != f.kvHeads
                        || info.headDim != f.headDim || info.tokens != f.tokens || info.codec != f.codec
                {
                    throw WStoreError.corruptRecord(
                        name: "KV chunk \(hex(k))", reason: "its header differs from the prefix's first chunk")
                }
                values.append(v)
                infos.append(info)
            } catch let e as WStoreError {
                return (values, infos, e)
            }
        }
        return (values, infos, nil)
    }

    /// Counts a lookup and keeps its last uses for the next writer.
    private func noteLookup(_ keys: [UInt64], asked: Int, _ chunks: Int, damaged: Bool) {
        uses.withLock { u in
            u.lookups += 1
            u.askedTokens += asked
            u.hitTokens += chunks * options.chunkTokens
            if damaged { u.damaged += 1 }
            if !readOnly { u.stamp(keys.prefix(chunks)) }
        }
    }

    /// Writes the last uses lookups saw since the last store, in one write transaction
    /// (a read-only handle has nothing to write). Done by every store; call it before
    /// dropping a handle to keep the eviction order of lookups across a restart.
    public func flushUseStamps() throws {
        guard !readOnly else { return }
        let pending = uses.withLock { $0.take() }
        guard !pending.isEmpty else { return }
        do {
            try write { txn in
                var counters = try Counters.read(txn, meta)
                try foldUses(txn, pending, counters: &counters)
                try counters.write(txn, meta)
            }
        } catch {
            uses.withLock { $0.restore(pending) }
            throw error
        }
    }

    /// Stamps the chunks of `keys` (oldest use first) that still exist with the next clock values.
    func foldUses(_ txn: borrowing WriteTransaction, _ keys: [UInt64], counters: inout Counters) throws {
        for k in keys {
            guard var node = try Node.read(txn, nodes, k) else { continue }
            counters.clock += 1
            try touch(txn, key: k, node: &node, clock: counters.clock)
        }
    }

    /// This handle's lookup counters: lookups, tokens asked for, tokens delivered, lookups ended by damage.
    public func lookupCounters() -> (lookups: Int, askedTokens: Int, hitTokens: Int, damaged: Int) {
        uses.withLock { ($0.lookups, $0.askedTokens, $0.hitTokens, $0.damaged) }
    }

    /// Stores the KV of `tokens` read from the caller's buffers `layers` (one view per
    /// layer, holding `tokens.count` tokens): ``store(tokens:model:salt:kv:)`` of those bytes.
    /// - Returns: what the store did, and the leading tokens cached now.
    /// - Throws: ``WStoreError/invalidArgument(_:)`` for views that disagree or a read-only handle.
    public func store(tokens: [UInt32], model: String, salt: String = "", from layers: [KVLayerView]) throws
        -> (result: StoreResult, cachedTokens: Int)
    {
        guard let first = layers.first else { throw WStoreError.invalidArgument("no layers to store") }
        guard KVTensor.supportedDTypes.contains(first.dtype),
            layers.allSatisfy({ $0.dtype == first.dtype && $0.kvHeads == first.kvHeads && $0.headDim == first.headDim }
            ),
            first.kvHeads > 0, first.headDim > 0
        else {
            throw WStoreError.invalidArgument(
                "every layer needs the same dtype (f16, bf16 or f32), KV heads and head size, all positive")
        }
        let ct = options.chunkTokens
        let whole = tokens.count / ct * ct
        let ids = Array(tokens.prefix(whole))
        guard whole > 0 else {
            return (StoreResult(written: 0, present: 0, evicted: 0, storedBytes: 0, rawBytes: 0), 0)
        }
        let row = first.headDim * first.dtype.elementSize!
        let heads = first.kvHeads
        // Chunk i's rows of one layer's keys or values, gathered into a [heads, chunk, dim]
        // tensor; only missing chunks are gathered, each once, by the encoder that needs it.
        @Sendable func gather(_ view: KVLayerView, _ kv: Int, chunk i: Int) throws -> KVTensor {
            let rows = view.rows(kv, from: i * ct)
            let bytes = [UInt8](unsafeUninitializedCapacity: heads * ct * row) { b, n in
                n = b.count
                for h in 0 ..< heads {
                    for t in 0 ..< ct {
                        (UnsafeMutableRawPointer(b.baseAddress!) + (h * ct + t) * row)
                            .copyMemory(from: rows.row(head: h, token: t), byteCount: row)
                    }
                }
            }
            return try KVTensor(dtype: first.dtype, heads: heads, tokens: ct, headDim: first.headDim, bytes: bytes)
        }
        let result = try store(
            tokens: ids, model: model, salt: salt, chunkBytes: layers.count * 2 * heads * ct * row
        ) { i in
            try KVCacheData(
                layers: layers.map { try KVLayer(keys: gather($0, 0, chunk: i), values: gather($0, 1, chunk: i)) })
        }
        return (result, try probe(tokens: ids, model: model, salt: salt))
    }
}

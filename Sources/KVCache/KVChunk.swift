import WStoreCore

/// One stored chunk: every layer's keys and values for a run of tokens, each tensor a
/// wstore record (checksummed, zstd frames). Byte layout: format-spec/KV.md §3.
package enum KVChunk {
    /// "WKVC"
    static let magic: UInt32 = 0x4356_4B57
    /// The chunk version this build writes; version 1 (not bound to its key) is still read.
    static let version: UInt16 = 2
    static let fixedHeaderSize = 48

    /// Encodes `kv` (one chunk's tokens) with `codec`, bound to the chunk key `key` it is
    /// stored under (its chained prefix hash; KV.md §4): the chunk's bytes, assembled.
    /// - Throws: ``WStoreError`` when zstd fails.
    package static func encode(
        _ kv: KVCacheData, key: UInt64, codec: KVCodec, kivi: KIVIOptions,
        threads: Int = 1
    ) throws -> [UInt8] {
        try encodeParts(kv, key: key, codec: codec, kivi: kivi, threads: threads).bytes(threads: threads)
    }

    /// A chunk encoded but not assembled: its header and its records, each with the bytes it
    /// was encoded from. ``withPieces(_:)`` lends them in order for one vectored write;
    /// ``bytes(threads:)`` copies them together.
    package struct Encoded: Sendable {
        let header: [UInt8]
        let records: [(record: EncodedRecord, source: [UInt8])]
        /// The chunk's length in bytes.
        package let count: Int

        /// Lends the chunk's bytes to `body` as pieces in order (valid during the call).
        package func withPieces<R>(_ body: ([UnsafeRawBufferPointer]) throws -> R) rethrows -> R {
            try header.withUnsafeBytes { h in
                var pieces = [h]
                pieces.reserveCapacity(1 + 4 * records.count)
                return try collect(from: 0, into: &pieces, body)
            }
        }

        /// Nests the lending of record `i`'s bytes and those after it, then calls `body`.
        private func collect<R>(
            from i: Int, into pieces: inout [UnsafeRawBufferPointer], _ body: ([UnsafeRawBufferPointer]) throws -> R
        ) rethrows -> R {
            guard i < records.count else { return try body(pieces) }
            return try records[i].source.withUnsafeBytes { src in
                try records[i].record.withPieces(source: src) { mine in
                    pieces += mine
                    return try collect(from: i + 1, into: &pieces, body)
                }
            }
        }

        /// The chunk's bytes, its records copied in on up to `threads` threads.
        package func bytes(threads: Int = 1) -> [UInt8] {
            var starts: [Int] = []
            var at = header.count
            for r in records {
                starts.append(at)
                at += r.record.totalSize
            }
            return [UInt8](unsafeUninitializedCapacity: count) { out, n in
                let base = UnsafeMutableRawBufferPointer(out)
                header.withUnsafeBytes { base.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
                let dst = UncheckedSendable(base)
                try! parallelFor(records.count, threads: threads) { i, _ in
                    let (record, source) = records[i]
                    let slot = UnsafeMutableRawBufferPointer(
                        rebasing: dst.value[starts[i] ..< starts[i] + record.totalSize])
                    source.withUnsafeBytes { record.write(into: slot, source: $0) }
                }
                n = count
            }
        }
    }

    /// Encodes `kv` as ``encode(_:key:codec:kivi:threads:)`` does, without assembling the
    /// chunk: its records encoded (compressed or hashed) on up to `threads` threads, by the
    /// same ``ChunkEncoding`` a store's writer uses, here on the calling thread.
    /// - Throws: ``WStoreError`` when zstd fails.
    package static func encodeParts(
        _ kv: KVCacheData, key: UInt64, codec: KVCodec, kivi: KIVIOptions,
        threads: Int = 1
    ) throws -> Encoded {
        try ChunkEncoding(key: key, codec: codec, kivi: kivi, threads: threads) { kv }.value()
    }

    /// Record `i` of a chunk whose tensors are `tensors` (keys and values of each layer in
    /// turn), bound to the chunk key `key`: the encoded record and the bytes it was made from.
    static func encodeRecord(
        _ tensors: [KVTensor], _ i: Int, key: UInt64, codec: KVCodec, kivi: KIVIOptions
    ) throws -> (record: EncodedRecord, source: [UInt8]) {
        try encodeTensor(
            tensors[i], isKeys: i % 2 == 0, binding: recordBinding(key: key, index: i), codec: codec, kivi: kivi)
    }

    /// The chunk of `kv` from its encoded `records`, in order: its header, bound to `key`.
    static func assemble(
        _ kv: KVCacheData, records: [(record: EncodedRecord, source: [UInt8])], key: UInt64, codec: KVCodec,
        kivi: KIVIOptions
    ) -> Encoded {
        let first = kv.layers[0].keys
        let tableSize = 16 * records.count
        var header = [UInt8](repeating: 0, count: fixedHeaderSize + tableSize)
        var offset = header.count
        header.withUnsafeMutableBytes { b in
            func put<T: FixedWidthInteger>(_ v: T, _ at: Int) {
                b.storeBytes(of: v.littleEndian, toByteOffset: at, as: T.self)
            }
            put(magic, 0)
            put(version, 4)
            b[6] = codec.code
            b[7] = first.dtype.code
            put(UInt32(kv.layers.count), 8)
            put(UInt32(kv.tokens), 12)
            put(UInt32(first.heads), 16)
            put(UInt32(first.headDim), 20)
            put(UInt32(kivi.group), 24)
            put(UInt32(kivi.residual), 28)
            for (i, r) in records.enumerated() {
                put(UInt64(offset), fixedHeaderSize + 16 * i)
                put(UInt64(r.record.totalSize), fixedHeaderSize + 16 * i + 8)
                offset += r.record.totalSize
            }
            put(UInt64(offset), 32)
            put(headerChecksum(UnsafeRawBufferPointer(b), key: key), 40)
        }
        return Encoded(header: header, records: records, count: offset)
    }

    /// What binds record `index` (2·layer for keys, 2·layer+1 for values) of chunk `key`:
    /// ``Record/binding(key:)`` of the chunk key (u64 big-endian) followed by `index` (u32 big-endian).
    package static func recordBinding(key: UInt64, index: Int) -> UInt64 {
        var k = withUnsafeBytes(of: key.bigEndian) { Array($0) }
        withUnsafeBytes(of: UInt32(index).bigEndian) { k += $0 }
        return Record.binding(key: k)
    }

    private static func encodeTensor(
        _ t: KVTensor, isKeys: Bool, binding: UInt64, codec: KVCodec,
        kivi: KIVIOptions
    ) throws -> (record: EncodedRecord, source: [UInt8]) {
        var options = EncodeOptions()
        options.codec = codec == .raw ? .raw : .zstd
        options.minSavings = 0
        let rec: EncodedRecord, source: [UInt8]
        if let bits = codec.bits {
            source = KIVI.encode(t, bits: bits, axis: isKeys ? .perChannel : .perToken, options: kivi)
            rec = try source.withUnsafeBytes {
                try RecordEncoder.encode($0, dtype: .u8, shape: [source.count], binding: binding, options: options)
            }
        } else {
            source = t.bytes
            rec = try source.withUnsafeBytes {
                try RecordEncoder.encode($0, dtype: t.dtype, shape: t.shape, binding: binding, options: options)
            }
        }
        return (rec, source)
    }

    /// xxh3 of the header with its checksum field (bytes 40..<48) left out; from version 2
    /// the inner hash is seeded with the chunk key (version 1: seed 0).
    private static func headerChecksum(_ b: UnsafeRawBufferPointer, key: UInt64) -> UInt64 {
        let seed = xxh3(UnsafeRawBufferPointer(rebasing: b[0 ..< 40]), seed: key)
        return xxh3(UnsafeRawBufferPointer(rebasing: b[fixedHeaderSize...]), seed: seed)
    }

    /// Rewrites the header checksum of `b` to match its header and chunk key `key`, when
    /// the layer count leaves a whole header in `b` (fuzzing reaches the fields behind the
    /// checksum so). Returns whether it did.
    package static func resealHeader(_ b: UnsafeMutableRawBufferPointer, key: UInt64) -> Bool {
        guard b.count >= fixedHeaderSize else { return false }
        let layers = Int(UInt32(littleEndian: b.loadUnaligned(fromByteOffset: 8, as: UInt32.self)))
        guard layers > 0, layers <= 4096, fixedHeaderSize + 32 * layers <= b.count else { return false }
        let header = UnsafeRawBufferPointer(rebasing: b[0 ..< fixedHeaderSize + 32 * layers])
        b.storeBytes(of: headerChecksum(header, key: key).littleEndian, toByteOffset: 40, as: UInt64.self)
        return true
    }

    /// What a chunk header says.
    package struct Info: Sendable {
        package let codec: KVCodec
        package let dtype: DType
        package let layers: Int
        package let tokens: Int
        package let kvHeads: Int
        package let headDim: Int
        /// The chunk version: 2 when the chunk is bound to its key.
        package let version: Int
        /// Raw bytes of its keys and values.
        package var rawBytes: Int { 2 * layers * tokens * kvHeads * headDim * dtype.elementSize! }
    }

    /// Parses and checks a chunk header.
    /// - Throws: ``WStoreError/corruptRecord(name:reason:)`` for a damaged header.
    /// - Parameter key: the chunk key it was read under; a version-2 chunk of another key fails.
    package static func info(_ bytes: UnsafeRawBufferPointer, key: UInt64, name: String) throws -> Info {
        func corrupt(_ why: String) -> WStoreError { .corruptRecord(name: name, reason: why) }
        guard bytes.count >= fixedHeaderSize else {
            throw corrupt("chunk of \(bytes.count) bytes, shorter than its header")
        }
        func u32(_ at: Int) -> Int {
            Int(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: at, as: UInt32.self)))
        }
        func u64(_ at: Int) -> UInt64 { UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: at, as: UInt64.self)) }
        guard UInt32(u32(0)) == magic else { throw corrupt("bad chunk magic") }
        let v = UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 4, as: UInt16.self))
        guard v <= version else {
            throw WStoreError.newerFormat(what: "KV chunk \(name)", found: Int(v), supported: Int(version))
        }
        guard v >= 1 else { throw corrupt("chunk version 0") }
        let layers = u32(8)
        guard layers > 0, layers <= 4096, fixedHeaderSize + 32 * layers <= bytes.count else {
            throw corrupt("bad layer count \(layers)")
        }
        guard
            headerChecksum(
                UnsafeRawBufferPointer(rebasing: bytes[0 ..< fixedHeaderSize + 32 * layers]),
                key: v >= 2 ? key : 0) == u64(40)
        else {
            throw corrupt(
                v >= 2
                    ? "chunk header checksum mismatch (damaged, or not the chunk of this key)"
                    : "chunk header checksum mismatch")
        }
        guard let codec = KVCodec(code: bytes[6]), let dtype = DType(code: bytes[7], ggmlType: 0),
            KVTensor.supportedDTypes.contains(dtype)
        else { throw corrupt("unknown codec or dtype") }
        guard u64(32) == UInt64(bytes.count) else {
            throw corrupt("chunk is \(bytes.count) bytes, header says \(u64(32))")
        }
        // Elements of one tensor, bounded so that every size derived from them fits (2^40: 4 TiB of f32).
        let (hd, o1) = u32(16).multipliedReportingOverflow(by: u32(20))
        let (elements, o2) = hd.multipliedReportingOverflow(by: u32(12))
        guard !o1, !o2, elements <= 1 << 40 else {
            throw corrupt("shape [\(u32(16)), \(u32(12)), \(u32(20))] is out of range")
        }
        return Info(
            codec: codec, dtype: dtype, layers: layers, tokens: u32(12), kvHeads: u32(16), headDim: u32(20),
            version: Int(v))
    }

    /// Decodes a whole chunk into fresh tensors, checking every record's checksum.
    /// - Throws: ``WStoreError/corruptRecord(name:reason:)`` or ``WStoreError/checksumMismatch(name:expected:actual:)``:
    ///   a damaged chunk is reported, never returned.
    package static func decode(
        _ bytes: UnsafeRawBufferPointer, key: UInt64, name: String,
        threads: Int = 1
    ) throws -> KVCacheData {
        let info = try info(bytes, key: key, name: name)
        let row = info.headDim * info.dtype.elementSize!, size = info.kvHeads * info.tokens * row
        let count = 2 * info.layers
        let sink = UncheckedSendable(UnsafeMutableBufferPointer<KVTensor?>.allocate(capacity: count))
        sink.value.initialize(repeating: nil)
        defer {
            sink.value.deinitialize()
            sink.value.deallocate()
        }
        // Every record's own (sealed) header must agree with the chunk header before anything
        // the chunk header's shape implies is allocated: a damaged header may claim any shape.
        for i in 0 ..< count { _ = try record(bytes, info, i, key: key, name: name) }
        try parallelFor(count, threads: threads) { i, _ in
            let out = try [UInt8](unsafeUninitializedCapacity: size) { b, n in
                try decodeTensor(
                    bytes, info, i, key: key, name: name,
                    into: KVRows(
                        base: UnsafeMutableRawPointer(b.baseAddress!), tokenStride: row, headStride: info.tokens * row))
                n = size
            }
            sink.value[i] = try KVTensor(
                dtype: info.dtype, heads: info.kvHeads, tokens: info.tokens, headDim: info.headDim, bytes: out)
        }
        return try KVCacheData(
            layers: (0 ..< info.layers).map { l in
                try KVLayer(keys: sink.value[2 * l]!, values: sink.value[2 * l + 1]!)
            })
    }

    /// Record `i` of a chunk, its bounds, seal and version checked, and its size checked
    /// against the chunk header's shape (an unquantized record has exactly that shape; a
    /// quantized one is no larger than the shape allows), so that nothing a damaged header
    /// or record claims is allocated before both agree. Returns the view and its name.
    static func record(
        _ bytes: UnsafeRawBufferPointer, _ info: Info, _ i: Int, key: UInt64, name: String
    ) throws -> (RecordView, String) {
        let off64 = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: fixedHeaderSize + 16 * i, as: UInt64.self))
        let len64 = UInt64(
            littleEndian: bytes.loadUnaligned(fromByteOffset: fixedHeaderSize + 16 * i + 8, as: UInt64.self))
        let what = "\(name) layer \(i / 2) \(i % 2 == 0 ? "keys" : "values")"
        guard off64 >= UInt64(fixedHeaderSize), off64 <= UInt64(bytes.count), len64 <= UInt64(bytes.count) - off64
        else {
            throw WStoreError.corruptRecord(name: what, reason: "record lies outside the chunk")
        }
        let off = Int(off64), len = Int(len64)
        let view = try RecordView(
            UnsafeRawBufferPointer(rebasing: bytes[off ..< off + len]),
            binding: recordBinding(key: key, index: i), name: what)
        guard view.version >= info.version else {
            throw WStoreError.corruptRecord(
                name: what, reason: "record version \(view.version) in a version-\(info.version) chunk")
        }
        let h = info.kvHeads, n = info.tokens, d = info.headDim
        if info.codec.bits == nil {
            guard view.shape == [h, n, d], view.dtype == info.dtype else {
                throw WStoreError.corruptRecord(
                    name: what, reason: "shape \(view.shape) does not match the chunk header")
            }
        } else if let bits = info.codec.bits {
            let elements = h * n * d
            guard view.rawSize <= KIVI.maxBlobSize(elements: elements, dtype: info.dtype) else {
                throw WStoreError.corruptRecord(
                    name: what, reason: "record of \(view.rawSize) bytes is larger than the chunk's shape allows")
            }
            guard view.rawSize >= KIVI.minBlobSize(elements: elements, bits: bits) else {
                throw WStoreError.corruptRecord(
                    name: what, reason: "record of \(view.rawSize) bytes is too small for the chunk's shape")
            }
        }
        return (view, what)
    }

    /// Decodes record `i` of a chunk (layer `i / 2`, keys when even) straight into `rows`,
    /// checking its checksum: a raw record is copied row by row out of the chunk (each
    /// head's rows hashed right after they are copied), a compressed one decodes into a
    /// reused scratch buffer and is scattered, a quantized one is dequantized into place.
    /// `info` is what ``info(_:key:name:)`` returned for `bytes`, read under chunk key `key`.
    /// - Throws: ``WStoreError/corruptRecord(name:reason:)`` or ``WStoreError/checksumMismatch(name:expected:actual:)``;
    ///   the rows then hold unspecified bytes.
    package static func decodeTensor(
        _ bytes: UnsafeRawBufferPointer, _ info: Info, _ i: Int, key: UInt64, name: String,
        into rows: KVRows
    ) throws {
        let (view, what) = try record(bytes, info, i, key: key, name: name)
        let h = info.kvHeads, n = info.tokens, d = info.headDim, row = d * info.dtype.elementSize!
        func scatter(_ src: UnsafeRawPointer, head: Int) {
            let block = src + head * n * row
            if rows.tokenStride == row {
                rows.row(head: head, token: 0).copyMemory(from: block, byteCount: n * row)
            } else {
                for t in 0 ..< n { rows.row(head: head, token: t).copyMemory(from: block + t * row, byteCount: row) }
            }
        }
        if info.codec.bits == nil {
            if view.codec == .raw {
                // Rows straight out of the map, hashed in pieces of about 16 KiB right after
                // they are copied, while still in cache (one pass over the source).
                let src = view.payload.baseAddress!
                let hasher = XXH3Stream()
                let piece = max(1, (16 << 10) / max(1, row))
                for head in 0 ..< h {
                    let block = src + head * n * row
                    var t0 = 0
                    while t0 < n {
                        let t1 = min(n, t0 + piece)
                        if rows.tokenStride == row {
                            rows.row(head: head, token: t0).copyMemory(
                                from: block + t0 * row, byteCount: (t1 - t0) * row)
                        } else {
                            for t in t0 ..< t1 {
                                rows.row(head: head, token: t).copyMemory(from: block + t * row, byteCount: row)
                            }
                        }
                        hasher.update(UnsafeRawBufferPointer(start: block + t0 * row, count: (t1 - t0) * row))
                        t0 = t1
                    }
                }
                let digest = hasher.digest()
                guard digest == view.checksum else {
                    throw WStoreError.checksumMismatch(name: what, expected: view.checksum, actual: digest)
                }
                return
            }
        }
        let scratch = ScratchPool.take(max(1, view.rawSize))
        defer { ScratchPool.give(scratch) }
        let raw = UnsafeMutableRawBufferPointer(rebasing: scratch[0 ..< view.rawSize])
        try RecordDecoder.decode(view, name: what, into: raw)
        guard info.codec.bits != nil else {
            for head in 0 ..< h { scatter(UnsafeRawPointer(raw.baseAddress!), head: head) }
            return
        }
        let blob = UnsafeRawBufferPointer(raw)
        let hd = try KIVI.header(blob, name: what)
        guard hd.heads == h, hd.tokens == n, hd.headDim == d, hd.dtype == info.dtype else {
            throw WStoreError.corruptRecord(
                name: what, reason: "shape [\(hd.heads), \(hd.tokens), \(hd.headDim)] does not match the chunk header")
        }
        KIVI.decode(blob, hd, into: rows)
    }
}

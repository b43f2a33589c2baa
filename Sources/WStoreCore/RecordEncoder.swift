/// Which codec a record gets.
public enum CodecChoice: String, Sendable, CaseIterable {
    /// zstd over byte-grouped planes, falling back to raw when it saves under 5%.
    case auto
    /// Always raw: readable zero-copy.
    case raw
    /// Always zstd frames (planes that would save under 5% are still stored as they are).
    case zstd
}

/// Options for encoding one record.
package struct EncodeOptions: Sendable {
    package var codec: CodecChoice = .auto
    /// zstd level for planes that are not byte-grouped float planes.
    package var level: Int32 = 3
    /// Raw bytes per independent frame.
    package var frameSize: Int = Record.defaultFrameSize
    /// Threads that compress frames of this one record.
    package var threads: Int = 1
    /// A plane (or a whole record, under `.auto`) is stored as it is unless
    /// compression saves at least this fraction.
    package var minSavings: Double = 0.05
    /// Records shorter than this are padded at the end, so that LMDB stores every
    /// record on overflow pages and the payload alignment holds (see FORMAT.md §4.4).
    package var minRecordSize: Int = 0
    package init() {}
}

/// A record ready to be written: the header, and the payload as compressed pieces
/// or as a reference to the caller's raw bytes.
package struct EncodedRecord: Sendable {
    package let header: [UInt8]
    /// Compressed or stored planes in payload order; `nil` for a raw record.
    package let pieces: [[UInt8]]?
    package let codec: Record.Codec
    package let rawSize: Int
    package let storedSize: Int
    /// The whole record length, tail padding included.
    package let totalSize: Int
    package let checksum: UInt64
    /// The key binding the header was sealed with (``Record/binding(key:)``).
    package let binding: UInt64

    /// Writes the record into `dst` (`totalSize` bytes); `source` is the same raw
    /// bytes given to ``RecordEncoder/encode(_:dtype:shape:options:)``.
    ///
    /// With `writeFile`, the payload goes through it instead (bytes, and their offset in
    /// the record): for `dst` in a `MDB_WRITEMAP` map, a pwrite(2) to the data file at
    /// that place fills the same page-cache pages without faulting each one in.
    package func write(
        into dst: UnsafeMutableRawBufferPointer, source: UnsafeRawBufferPointer,
        writeFile: ((UnsafeRawBufferPointer, Int) throws -> Void)? = nil
    ) rethrows {
        precondition(dst.count == totalSize)
        let base = dst.baseAddress!
        header.withUnsafeBytes { base.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        var at = header.count
        func put(_ bytes: UnsafeRawBufferPointer) throws {
            if let writeFile {
                try writeFile(bytes, at)
            } else {
                (base + at).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
            }
            at += bytes.count
        }
        if let pieces {
            for p in pieces where !p.isEmpty { try p.withUnsafeBytes { try put($0) } }
        } else if source.count > 0 {
            try put(source)
        }
        if at < totalSize { (base + at).initializeMemory(as: UInt8.self, repeating: 0, count: totalSize - at) }
    }
}

/// Turns a tensor's bytes into a record.
package enum RecordEncoder {
    /// Encodes `src` as a record of `dtype` and `shape`, bound to the key it will be
    /// stored under (`binding` is ``Record/binding(key:)`` of that key).
    ///
    /// - Throws: ``WStoreError/invalidArgument(_:)`` when the sizes disagree,
    ///   ``WStoreError/codec(_:)`` when zstd fails.
    package static func encode(
        _ src: UnsafeRawBufferPointer, dtype: DType, shape: [Int], binding: UInt64,
        options: EncodeOptions
    ) throws -> EncodedRecord {
        guard shape.count <= Record.maxRank else {
            throw WStoreError.invalidArgument("rank \(shape.count) exceeds the maximum of \(Record.maxRank)")
        }
        guard shape.allSatisfy({ $0 >= 0 }) else {
            throw WStoreError.invalidArgument("negative dimension in shape \(shape)")
        }
        if dtype.bitWidth != nil {
            let elements = shape.reduce(1) { $0.multipliedReportingOverflow(by: $1).overflow ? Int.max : $0 * $1 }
            guard let need = dtype.byteCount(elements: elements), need == src.count else {
                throw WStoreError.invalidArgument("shape \(shape) of \(dtype) does not take \(src.count) bytes")
            }
        }
        let checksum = xxh3(src)
        if options.codec != .raw && src.count > 0 {
            let transform = dtype.preferredTransform
            let frameSize = max(transform.width, options.frameSize - options.frameSize % transform.width)
            let compressed = try compressFrames(src, transform: transform, frameSize: frameSize, options: options)
            let stored = compressed.pieces.reduce(0) { $0 + $1.count }
            let worthIt = Double(stored) <= Double(src.count) * (1 - options.minSavings)
            if options.codec == .zstd || worthIt {
                return finish(
                    dtype: dtype, shape: shape, codec: .zstd, transform: transform, rawSize: src.count,
                    frameSize: frameSize, table: compressed.table, frameChecksums: compressed.checksums,
                    pieces: compressed.pieces, storedSize: stored, checksum: checksum, binding: binding,
                    options: options)
            }
        }
        let blockSize = Record.defaultBlockSize
        let blocks = blockChecksums(src, blockSize: blockSize, threads: options.threads)
        return finish(
            dtype: dtype, shape: shape, codec: .raw, transform: .none, rawSize: src.count,
            frameSize: blockSize, table: [], frameChecksums: blocks, pieces: nil, storedSize: src.count,
            checksum: checksum, binding: binding, options: options)
    }

    /// The xxh3-64 of each `blockSize` block of `src` (the last one shorter).
    package static func blockChecksums(_ src: UnsafeRawBufferPointer, blockSize: Int, threads: Int) -> [UInt64] {
        let count = (src.count + blockSize - 1) / blockSize
        var out = [UInt64](repeating: 0, count: count)
        out.withUnsafeMutableBufferPointer { o in
            let o = UncheckedSendable(o)
            try! parallelFor(count, threads: threads) { b, _ in
                let start = b * blockSize
                o.value[b] = xxh3(UnsafeRawBufferPointer(rebasing: src[start ..< min(src.count, start + blockSize)]))
            }
        }
        return out
    }

    private struct Frames {
        var table: [(offset: Int, size: Int, method: Record.PlaneMethod)]
        var checksums: [UInt64]
        var pieces: [[UInt8]]
    }

    private static func compressFrames(
        _ src: UnsafeRawBufferPointer, transform: PlaneTransform, frameSize: Int,
        options: EncodeOptions
    ) throws -> Frames {
        let frameCount = (src.count + frameSize - 1) / frameSize
        let planes = transform.width
        var pieces = [[UInt8]](repeating: [], count: frameCount * planes)
        var methods = [Record.PlaneMethod](repeating: .stored, count: frameCount * planes)
        var checksums = [UInt64](repeating: 0, count: frameCount)
        let profile: ZstdProfile = transform == .none ? .level(options.level) : .plane
        let workers = max(1, min(options.threads, frameCount))
        let scratch = UnsafeMutableRawBufferPointer.allocate(
            byteCount: transform == .none ? 0 : workers * frameSize, alignment: 64)
        defer { scratch.deallocate() }
        let outputPerWorker = Zstd.bound(frameSize)
        let output = UnsafeMutableRawBufferPointer.allocate(byteCount: workers * outputPerWorker, alignment: 64)
        defer { output.deallocate() }
        try pieces.withUnsafeMutableBufferPointer { piecesOut in
            try checksums.withUnsafeMutableBufferPointer { checksumsOut in
                try methods.withUnsafeMutableBufferPointer { methodsOut in
                    try parallelFor(frameCount, threads: workers) { f, w in
                        let start = f * frameSize
                        let frame = UnsafeRawBufferPointer(rebasing: src[start ..< min(src.count, start + frameSize)])
                        checksumsOut[f] = xxh3(frame)
                        let planeLength = frame.count / planes
                        let planeBytes: UnsafeRawBufferPointer
                        if transform == .none {
                            planeBytes = frame
                        } else {
                            let mine = UnsafeMutableRawBufferPointer(
                                rebasing: scratch[w * frameSize ..< w * frameSize + frame.count])
                            transform.split(frame, into: mine)
                            planeBytes = UnsafeRawBufferPointer(mine)
                        }
                        for p in 0 ..< planes {
                            let plane = UnsafeRawBufferPointer(
                                rebasing: planeBytes[p * planeLength ..< (p + 1) * planeLength])
                            // Compressed into this worker's scratch, then kept in an array of
                            // exactly its size: a batch holds its pieces until written.
                            let room = UnsafeMutableRawBufferPointer(
                                rebasing: output[w * outputPerWorker ..< (w + 1) * outputPerWorker])
                            let n = try Zstd.compress(plane, into: room, profile: profile)
                            if Double(n) <= Double(planeLength) * (1 - options.minSavings) {
                                piecesOut[f * planes + p] = Array(UnsafeRawBufferPointer(rebasing: room[..<n]))
                                methodsOut[f * planes + p] = .zstd
                            } else {
                                piecesOut[f * planes + p] = Array(plane)
                                methodsOut[f * planes + p] = .stored
                            }
                        }
                    }
                }
            }
        }
        var table: [(offset: Int, size: Int, method: Record.PlaneMethod)] = []
        table.reserveCapacity(pieces.count)
        var offset = 0
        for (i, piece) in pieces.enumerated() {
            table.append((offset, piece.count, methods[i]))
            offset += piece.count
        }
        return Frames(table: table, checksums: checksums, pieces: pieces)
    }

    private static func finish(
        dtype: DType, shape: [Int], codec: Record.Codec, transform: PlaneTransform,
        rawSize: Int, frameSize: Int,
        table: [(offset: Int, size: Int, method: Record.PlaneMethod)], frameChecksums: [UInt64],
        pieces: [[UInt8]]?, storedSize: Int, checksum: UInt64, binding: UInt64,
        options: EncodeOptions
    ) -> EncodedRecord {
        let headerLength = Record.headerLength(
            rank: shape.count, tableEntries: table.count,
            frameChecksums: frameChecksums.count)
        var h = [UInt8](repeating: 0, count: headerLength)
        h.withUnsafeMutableBytes { b in
            func put<T: FixedWidthInteger>(_ v: T, _ at: Int) {
                b.storeBytes(of: v.littleEndian, toByteOffset: at, as: T.self)
            }
            put(Record.magic, 0)
            put(Record.formatVersion, 4)
            put(UInt16(0), 6)
            put(UInt32(headerLength), 8)
            b[12] = dtype.code
            b[13] = codec.rawValue
            b[14] = transform.rawValue
            b[15] = UInt8(shape.count)
            if case .ggml(let t) = dtype { put(t, 16) }
            put(UInt32(transform.width), 20)
            put(UInt64(rawSize), 24)
            put(UInt64(storedSize), 32)
            put(checksum, 40)
            put(UInt32(frameSize), 48)
            put(UInt32(frameChecksums.count), 52)
            var at = Record.fixedHeaderSize
            for d in shape {
                put(UInt64(d), at)
                at += 8
            }
            for e in table {
                put(UInt64(e.offset), at)
                put(UInt32(e.size), at + 8)
                put(e.method.rawValue, at + 12)
                at += Record.frameEntrySize
            }
            for c in frameChecksums {
                put(c, at)
                at += Record.frameChecksumSize
            }
            put(Record.headerChecksum(UnsafeRawBufferPointer(b), headerLength: headerLength, binding: binding), 56)
        }
        let total = max(headerLength + storedSize, options.minRecordSize)
        return EncodedRecord(
            header: h, pieces: pieces, codec: codec, rawSize: rawSize, storedSize: storedSize,
            totalSize: total, checksum: checksum, binding: binding)
    }
}

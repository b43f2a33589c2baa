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
    /// A plane longer than twice this is first tried on its first `sampleSize` bytes: when
    /// they do not save `minSavings`, the plane is stored as it is without compressing the
    /// rest (bf16's mantissa plane is close to random: zstd would spend its time for
    /// nothing). 0 compresses every plane whole.
    package var sampleSize: Int = 32 << 10
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
    package let payload: EncodedPayload?
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
        if let payload {
            for p in payload.pieces where p.count > 0 {
                try put(UnsafeRawBufferPointer(rebasing: payload.buffer[p.offset ..< p.offset + p.count]))
            }
        } else if source.count > 0 {
            try put(source)
        }
        if at < totalSize { (base + at).initializeMemory(as: UInt8.self, repeating: 0, count: totalSize - at) }
    }
}

extension EncodedRecord {
    /// Hands `body` the record's bytes in order, as pieces of memory that stay valid during
    /// the call: the header, the payload (its compressed pieces, or `source`, the raw bytes
    /// given to the encoder), then zeros up to ``totalSize``.
    package func withPieces<R>(source: UnsafeRawBufferPointer, _ body: ([UnsafeRawBufferPointer]) throws -> R)
        rethrows -> R
    {
        try header.withUnsafeBytes { h in
            var pieces = [h]
            var at = header.count
            if let payload {
                for p in payload.pieces where p.count > 0 {
                    pieces.append(UnsafeRawBufferPointer(rebasing: payload.buffer[p.offset ..< p.offset + p.count]))
                    at += p.count
                }
            } else if source.count > 0 {
                pieces.append(source)
                at += source.count
            }
            return try Self.zeros.withUnsafeBytes { z in
                while at < totalSize {
                    let n = min(totalSize - at, z.count)
                    pieces.append(UnsafeRawBufferPointer(rebasing: z[..<n]))
                    at += n
                }
                return try body(pieces)
            }
        }
    }

    private static let zeros = [UInt8](repeating: 0, count: 4096)
}

/// The payload of a compressed record, held in one buffer of the tensor's raw size: each
/// frame's planes sit at their raw places in it, compressed (then shorter) or stored as
/// they are, and ``pieces`` lists them in payload order. One allocation a record, and a
/// stored plane is split straight into its place, never copied again before it is written.
package final class EncodedPayload: @unchecked Sendable {
    // Written by the encoder's workers (each frame's range by one worker) before the
    // record is made; only read after.
    let buffer: UnsafeMutableRawBufferPointer
    /// The payload's pieces, in order: each a range of ``buffer``.
    package let pieces: [(offset: Int, count: Int)]

    init(buffer: UnsafeMutableRawBufferPointer, pieces: [(offset: Int, count: Int)]) {
        self.buffer = buffer
        self.pieces = pieces
    }

    deinit { ScratchPool.give(buffer) }
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
            let stored = compressed.payload.pieces.reduce(0) { $0 + $1.count }
            let worthIt = Double(stored) <= Double(src.count) * (1 - options.minSavings)
            if options.codec == .zstd || worthIt {
                return finish(
                    dtype: dtype, shape: shape, codec: .zstd, transform: transform, rawSize: src.count,
                    frameSize: frameSize, table: compressed.table, frameChecksums: compressed.checksums,
                    payload: compressed.payload, storedSize: stored, checksum: checksum, binding: binding,
                    options: options)
            }
        }
        let blockSize = Record.defaultBlockSize
        let blocks = blockChecksums(src, blockSize: blockSize, threads: options.threads)
        return finish(
            dtype: dtype, shape: shape, codec: .raw, transform: .none, rawSize: src.count,
            frameSize: blockSize, table: [], frameChecksums: blocks, payload: nil, storedSize: src.count,
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
        var payload: EncodedPayload
    }

    private static func compressFrames(
        _ src: UnsafeRawBufferPointer, transform: PlaneTransform, frameSize: Int,
        options: EncodeOptions
    ) throws -> Frames {
        let frameCount = (src.count + frameSize - 1) / frameSize
        let planes = transform.width
        // Frame f's planes are split (or copied) to [f·frameSize, …) of the buffer; a plane
        // that compresses is compressed into the worker's scratch and copied back over
        // the start of its own place, shorter.
        let buffer = ScratchPool.take(src.count)
        var sizes = [Int](repeating: 0, count: frameCount * planes)
        var methods = [Record.PlaneMethod](repeating: .stored, count: frameCount * planes)
        var checksums = [UInt64](repeating: 0, count: frameCount)
        let profile: ZstdProfile = transform == .none ? .level(options.level) : .plane
        let workers = max(1, min(options.threads, frameCount))
        let outputPerWorker = Zstd.bound(frameSize / planes)
        let output = ScratchPool.take(workers * outputPerWorker)
        defer { ScratchPool.give(output) }
        do {
            try sizes.withUnsafeMutableBufferPointer { sizesOut in
                try checksums.withUnsafeMutableBufferPointer { checksumsOut in
                    try methods.withUnsafeMutableBufferPointer { methodsOut in
                        try parallelFor(frameCount, threads: workers) { f, w in
                            let start = f * frameSize
                            let frame = UnsafeRawBufferPointer(
                                rebasing: src[start ..< min(src.count, start + frameSize)])
                            checksumsOut[f] = xxh3(frame)
                            let planeLength = frame.count / planes
                            let place = UnsafeMutableRawBufferPointer(rebasing: buffer[start ..< start + frame.count])
                            // `.none` compresses the caller's bytes and copies only a stored plane.
                            if transform != .none { transform.split(frame, into: place) }
                            let planeBytes = transform == .none ? frame : UnsafeRawBufferPointer(place)
                            let room = UnsafeMutableRawBufferPointer(
                                rebasing: output[w * outputPerWorker ..< (w + 1) * outputPerWorker])
                            for p in 0 ..< planes {
                                let range = p * planeLength ..< (p + 1) * planeLength
                                let plane = UnsafeRawBufferPointer(rebasing: planeBytes[range])
                                let slot = UnsafeMutableRawBufferPointer(rebasing: place[range])
                                let n = try compressedSize(plane, into: room, profile: profile, options: options)
                                if let n {
                                    slot.baseAddress!.copyMemory(from: room.baseAddress!, byteCount: n)
                                    sizesOut[f * planes + p] = n
                                    methodsOut[f * planes + p] = .zstd
                                } else {
                                    if transform == .none { slot.copyMemory(from: plane) }
                                    sizesOut[f * planes + p] = planeLength
                                    methodsOut[f * planes + p] = .stored
                                }
                            }
                        }
                    }
                }
            }
        } catch {
            ScratchPool.give(buffer)
            throw error
        }
        var table: [(offset: Int, size: Int, method: Record.PlaneMethod)] = []
        var pieces: [(offset: Int, count: Int)] = []
        table.reserveCapacity(sizes.count)
        pieces.reserveCapacity(sizes.count)
        var offset = 0
        for f in 0 ..< frameCount {
            let planeLength = (min(src.count, (f + 1) * frameSize) - f * frameSize) / planes
            for p in 0 ..< planes {
                let i = f * planes + p
                table.append((offset, sizes[i], methods[i]))
                pieces.append((f * frameSize + p * planeLength, sizes[i]))
                offset += sizes[i]
            }
        }
        return Frames(
            table: table, checksums: checksums, payload: EncodedPayload(buffer: buffer, pieces: pieces))
    }

    /// Compresses `plane` into `room` and returns the compressed size when it saves at
    /// least `options.minSavings`; `nil` (the plane is to be stored as it is) otherwise, or
    /// when a sample of its first `options.sampleSize` bytes does not save that much
    /// (then the rest is not compressed at all).
    private static func compressedSize(
        _ plane: UnsafeRawBufferPointer, into room: UnsafeMutableRawBufferPointer, profile: ZstdProfile,
        options: EncodeOptions
    ) throws -> Int? {
        func saves(_ n: Int, of length: Int) -> Bool { Double(n) <= Double(length) * (1 - options.minSavings) }
        let sample = options.sampleSize
        if sample > 0, plane.count > 2 * sample {
            let n = try Zstd.compress(UnsafeRawBufferPointer(rebasing: plane[..<sample]), into: room, profile: profile)
            guard saves(n, of: sample) else { return nil }
        }
        let n = try Zstd.compress(plane, into: room, profile: profile)
        return saves(n, of: plane.count) ? n : nil
    }

    private static func finish(
        dtype: DType, shape: [Int], codec: Record.Codec, transform: PlaneTransform,
        rawSize: Int, frameSize: Int,
        table: [(offset: Int, size: Int, method: Record.PlaneMethod)], frameChecksums: [UInt64],
        payload: EncodedPayload?, storedSize: Int, checksum: UInt64, binding: UInt64,
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
            header: h, payload: payload, codec: codec, rawSize: rawSize, storedSize: storedSize,
            totalSize: total, checksum: checksum, binding: binding)
    }
}

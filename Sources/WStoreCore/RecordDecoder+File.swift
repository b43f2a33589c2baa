import Synchronization

extension RecordDecoder {
    /// Decodes `record`, lent by a transaction of `env`, by reading its bytes from the
    /// data file (``LMDBEnvironment/readFile(into:at:name:)``) instead of the map: once
    /// the caller has asked for exactly the record's range
    /// (``LMDBEnvironment/prepareToRead(_:)``, before touching it), a raw payload is read
    /// straight into `dst` (and hashed piece by piece while the next pieces arrive, when
    /// `verify`), and a compressed one into a scratch buffer it then decodes from.
    /// Nothing of the record is mapped into the process, and a cold read moves its bytes
    /// from disk once. With `dropCache`, its pages then leave the page cache too
    /// (``LMDBEnvironment/dropFileCache(offset:length:)``): for a caller that keeps
    /// its own copy.
    ///
    /// - Returns: `false`, having done nothing, when the record is not on overflow pages
    ///   (a small record: decode it from the map).
    /// - Throws: as ``decode(_:name:into:threads:verify:)``; ``WStoreError/io(call:path:errno:)`` on an I/O error.
    package static func decodeFromFile(
        _ record: RecordView, env: LMDBEnvironment, name: String,
        into dst: UnsafeMutableRawBufferPointer, threads: Int = 1, verify: Bool = true,
        dropCache: Bool = false
    ) throws -> Bool {
        guard let offset = env.fileOffset(of: record.bytes) else { return false }
        guard dst.count == record.rawSize else {
            throw WStoreError.invalidArgument("buffer of \(dst.count) bytes for \(name), which has \(record.rawSize)")
        }
        let length = record.headerLength + record.storedSize
        // The caller asked for the range before touching the record (prepareToRead).
        defer {
            // The record's overflow pages are its own: drop them whole, first to last,
            // after unmapping those the header read mapped (with the pages around it
            // that the fault mapped too): the page cache keeps pages that are mapped.
            if dropCache {
                PageCache.unmapPages(record.bytes)
                env.dropRecordPages(offset: offset, length: length)
            }
        }
        switch record.codec {
        case .raw:
            let payloadOffset = offset + record.headerLength
            guard verify else {
                try env.readFile(into: dst, at: payloadOffset, name: name)
                return true
            }
            if record.hasFrameChecksums {
                // Version 2: read each block and check it against its own checksum while
                // it is in cache, blocks on up to `threads` threads.
                try parallelFor(record.frameCount, threads: threads) { b, _ in
                    let start = b * record.frameSize, n = record.frameRawLength(b)
                    let piece = UnsafeMutableRawBufferPointer(rebasing: dst[start ..< start + n])
                    try env.readFile(into: piece, at: payloadOffset + start, name: name)
                    try checkFrame(record, b, UnsafeRawBufferPointer(piece), name: name)
                }
                return true
            }
            let hasher = XXH3Stream()
            var at = 0
            while at < record.rawSize {
                let n = min(fileChunk, record.rawSize - at)
                let piece = UnsafeMutableRawBufferPointer(rebasing: dst[at ..< at + n])
                try env.readFile(into: piece, at: payloadOffset + at, name: name)
                hasher.update(UnsafeRawBufferPointer(piece))
                at += n
            }
            let digest = hasher.digest()
            if digest != record.checksum {
                throw WStoreError.checksumMismatch(name: name, expected: record.checksum, actual: digest)
            }
        case .zstd:
            // The header first, then the payload frame by frame as workers reach it, so
            // decoding overlaps the reading of later frames (all already requested).
            let scratch = ScratchPool.take(length)
            defer { ScratchPool.give(scratch) }
            let bytes = UnsafeMutableRawBufferPointer(rebasing: scratch[0 ..< length])
            try env.readFile(
                into: UnsafeMutableRawBufferPointer(rebasing: bytes[0 ..< record.headerLength]), at: offset, name: name)
            let copy = try RecordView(UnsafeRawBufferPointer(bytes), binding: record.binding, name: name)
            guard copy.checksum == record.checksum, copy.storedSize == record.storedSize,
                copy.frameCount == record.frameCount, copy.codec == .zstd
            else {
                throw WStoreError.corruptRecord(name: name, reason: "data.mdb does not hold the record the map shows")
            }
            let readTo = Mutex(copy.headerLength)
            let digest = try decodeFrames(copy, name: name, into: dst, threads: threads) { f in
                let need =
                    copy.headerLength
                    + (0 ..< copy.planeCount).reduce(0) { end, p in
                        let e = copy.entry(frame: f, plane: p)
                        return max(end, e.offset + e.size)
                    }
                guard need <= length else { return }  // a damaged table: the decode reports it
                try readTo.withLock { at in
                    guard at < need else { return }
                    // At least fileChunk at a time, so reads stay large.
                    let end = min(length, max(need, at + fileChunk))
                    try env.readFile(
                        into: UnsafeMutableRawBufferPointer(rebasing: bytes[at ..< end]), at: offset + at, name: name)
                    at = end
                }
            }
            if let digest, digest != record.checksum {
                throw WStoreError.checksumMismatch(name: name, expected: record.checksum, actual: digest)
            }
        }
        return true
    }

    /// Bytes read and hashed at a time when a raw record is read from the file verified:
    /// large enough for few system calls, small enough to hash while still in cache.
    static let fileChunk = 1 << 20
}

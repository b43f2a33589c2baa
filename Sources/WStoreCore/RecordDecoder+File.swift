extension RecordDecoder {
    /// Decodes `record`, lent by a transaction of `env`, by reading its bytes from the
    /// data file (``LMDBEnvironment/readFile(into:at:name:)``) instead of the map: the
    /// kernel is asked for exactly the record's range first, a raw payload is read
    /// straight into `dst` (and hashed piece by piece while the next pieces arrive, when
    /// `verify`), and a compressed one into a scratch buffer it then decodes from.
    /// Nothing of the record is mapped into the process, and a cold read moves its bytes
    /// from disk once. With `dropCache`, its pages then leave the page cache too
    /// (``LMDBEnvironment/dropFileCache(offset:length:)``): for a caller that keeps
    /// its own copy.
    ///
    /// - Returns: `false`, having done nothing, when the record is not on overflow pages
    ///   (a small record: decode it from the map).
    /// - Throws: as ``decode(_:name:into:threads:verify:)``; ``LMDBError`` on an I/O error.
    package static func decodeFromFile(_ record: RecordView, env: LMDBEnvironment, name: String,
                                       into dst: UnsafeMutableRawBufferPointer, threads: Int = 1, verify: Bool = true,
                                       dropCache: Bool = false) throws -> Bool {
        guard let offset = env.fileOffset(of: record.bytes) else { return false }
        guard dst.count == record.rawSize else {
            throw WStoreError.invalidArgument("buffer of \(dst.count) bytes for \(name), which has \(record.rawSize)")
        }
        let length = record.headerLength + record.storedSize
        env.adviseWillNeed(offset: offset, length: length)
        defer { if dropCache { env.dropFileCache(offset: offset, length: length) } }
        switch record.codec {
        case .raw:
            let payloadOffset = offset + record.headerLength
            guard verify else {
                try env.readFile(into: dst, at: payloadOffset, name: name)
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
            let scratch = ScratchPool.take(length)
            defer { ScratchPool.give(scratch) }
            let bytes = UnsafeMutableRawBufferPointer(rebasing: scratch[0 ..< length])
            try env.readFile(into: bytes, at: offset, name: name)
            let copy = try RecordView(UnsafeRawBufferPointer(bytes), name: name)
            guard copy.checksum == record.checksum, copy.storedSize == record.storedSize else {
                throw WStoreError.corruptRecord(name: name, reason: "data.mdb does not hold the record the map shows")
            }
            try decode(copy, name: name, into: dst, threads: threads, verify: true)
        }
        return true
    }

    /// Bytes read and hashed at a time when a raw record is read from the file verified:
    /// large enough for few system calls, small enough to hash while still in cache.
    static let fileChunk = 1 << 20
}

import Synchronization

/// Turns a record back into the tensor's bytes.
package enum RecordDecoder {
    /// Decodes `record` into `dst` (exactly `record.rawSize` bytes), frames on up to
    /// `threads` threads, then checks the xxh3-64 of the result against the header.
    ///
    /// A compressed record is always checked. A raw record is a plain copy, checked
    /// only when `verify` is set (as for zero-copy reads): hashing costs about as much
    /// as the copy itself.
    /// `dst` should be at least 4-byte aligned for the fastest path; any alignment works.
    /// - Throws: ``WStoreError/checksumMismatch(name:expected:actual:)`` when the bytes
    ///   are not those that were written (`dst` then holds garbage, never a partial
    ///   success), ``WStoreError/corruptRecord(name:reason:)`` when a frame does not decode.
    package static func decode(_ record: RecordView, name: String, into dst: UnsafeMutableRawBufferPointer,
                               threads: Int = 1, verify: Bool = true) throws {
        guard dst.count == record.rawSize else {
            throw WStoreError.invalidArgument("buffer of \(dst.count) bytes for \(name), which has \(record.rawSize)")
        }
        guard record.rawSize > 0 else { return try self.verify(record, name: name, UnsafeRawBufferPointer(dst)) }
        switch record.codec {
        case .raw:
            dst.baseAddress!.copyMemory(from: record.payload.baseAddress!, byteCount: record.rawSize)
            if verify { try self.verify(record, name: name, UnsafeRawBufferPointer(dst)) }
        case .zstd:
            if let digest = try decodeFrames(record, name: name, into: dst, threads: threads) {
                if digest != record.checksum {
                    throw WStoreError.checksumMismatch(name: name, expected: record.checksum, actual: digest)
                }
            } else {
                try self.verify(record, name: name, UnsafeRawBufferPointer(dst))
            }
        }
    }

    /// Checks `bytes` against the record's stored checksum.
    package static func verify(_ record: RecordView, name: String, _ bytes: UnsafeRawBufferPointer) throws(WStoreError) {
        let actual = xxh3(bytes)
        if actual != record.checksum {
            throw .checksumMismatch(name: name, expected: record.checksum, actual: actual)
        }
    }

    /// Decodes every frame into `dst`. On one thread, frames come in order and each is
    /// hashed while still in cache: the digest of all of `dst` is returned. On several
    /// threads the result is `nil` and the caller hashes `dst` afterwards.
    private static func decodeFrames(_ record: RecordView, name: String, into dst: UnsafeMutableRawBufferPointer,
                                     threads: Int) throws -> UInt64? {
        let planes = record.planeCount
        let workers = max(1, min(threads, record.frameCount))
        let transform = record.transform
        // Per worker: room for every plane of one frame (compressed planes decode here).
        let scratchPerWorker = transform == .none ? 0 : record.frameSize
        let scratch = ScratchPool.take(max(1, workers * scratchPerWorker))
        defer { ScratchPool.give(scratch) }
        let payload = record.payload
        let hasher: XXH3Stream? = workers == 1 ? XXH3Stream() : nil
        try parallelFor(record.frameCount, threads: workers) { f, w in
            let rawStart = f * record.frameSize
            let rawLength = record.frameRawLength(f)
            let out = UnsafeMutableRawBufferPointer(rebasing: dst[rawStart ..< rawStart + rawLength])
            if transform == .none {
                let e = record.entry(frame: f, plane: 0)
                let src = UnsafeRawBufferPointer(rebasing: payload[e.offset ..< e.offset + e.size])
                switch e.method {
                case .stored: out.baseAddress!.copyMemory(from: src.baseAddress!, byteCount: rawLength)
                case .zstd: try decompress(src, into: out, name: name, frame: f)
                }
                hasher?.update(UnsafeRawBufferPointer(out))
                return
            }
            let planeLength = rawLength / planes
            let mine = scratch.baseAddress! + w * scratchPerWorker
            try withUnsafeTemporaryAllocation(of: UnsafePointer<UInt8>.self, capacity: planes) { planePointers in
                for p in 0 ..< planes {
                    let e = record.entry(frame: f, plane: p)
                    let src = UnsafeRawBufferPointer(rebasing: payload[e.offset ..< e.offset + e.size])
                    switch e.method {
                    case .stored:
                        // A stored plane is read in place, straight from the map.
                        planePointers[p] = src.baseAddress!.assumingMemoryBound(to: UInt8.self)
                    case .zstd:
                        let target = UnsafeMutableRawBufferPointer(start: mine + p * planeLength, count: planeLength)
                        try decompress(src, into: target, name: name, frame: f)
                        planePointers[p] = UnsafePointer(target.baseAddress!.assumingMemoryBound(to: UInt8.self))
                    }
                }
                transform.merge(planes: UnsafePointer(planePointers.baseAddress!), count: planeLength, into: out.baseAddress!)
            }
            hasher?.update(UnsafeRawBufferPointer(out))
        }
        return hasher?.digest()
    }

    private static func decompress(_ src: UnsafeRawBufferPointer, into dst: UnsafeMutableRawBufferPointer,
                                   name: String, frame: Int) throws {
        do {
            try Zstd.decompress(src, into: dst)
        } catch let e as ZstdError {
            throw WStoreError.corruptRecord(name: name, reason: "frame \(frame) does not decode: \(e.message)")
        }
    }
}

/// Reusable decode scratch buffers: a fresh large allocation costs a page fault per
/// page on every decode, which is as much as the decode of a small frame.
enum ScratchPool {
    private static let free = Mutex<[UncheckedSendable<UnsafeMutableRawBufferPointer>]>([])
    /// Buffers kept at most; more are released.
    private static let keep = 8

    static func take(_ size: Int) -> UnsafeMutableRawBufferPointer {
        let found = free.withLock { list -> UnsafeMutableRawBufferPointer? in
            guard let i = list.firstIndex(where: { $0.value.count >= size }) else { return nil }
            return list.remove(at: i).value
        }
        return found ?? .allocate(byteCount: size, alignment: 64)
    }

    static func give(_ buffer: UnsafeMutableRawBufferPointer) {
        let spill = free.withLock { list -> UnsafeMutableRawBufferPointer? in
            list.append(UncheckedSendable(buffer))
            guard list.count > keep else { return nil }
            let smallest = list.indices.min { list[$0].value.count < list[$1].value.count }!
            return list.remove(at: smallest).value
        }
        spill?.deallocate()
    }
}

import Synchronization

/// Turns a record back into the tensor's bytes.
package enum RecordDecoder {
    /// Decodes `record` into `dst` (exactly `record.rawSize` bytes), frames on up to
    /// `threads` threads, checking the bytes against the header's checksums.
    ///
    /// A version-2 record carries one xxh3-64 per frame (or per raw block), so each worker
    /// checks the frame it just decoded while it is in cache; a version-1 record has one
    /// xxh3-64 over the whole tensor, hashed in order as frames finish.
    /// A compressed record is always checked. A raw record is a plain copy, checked
    /// only when `verify` is set (as for zero-copy reads): hashing costs about as much
    /// as the copy itself.
    /// `dst` should be at least 4-byte aligned for the fastest path; any alignment works.
    /// - Throws: ``WStoreError/checksumMismatch(name:expected:actual:)`` when the bytes
    ///   are not those that were written (`dst` then holds garbage, never a partial
    ///   success), ``WStoreError/corruptRecord(name:reason:)`` when a frame does not decode.
    package static func decode(
        _ record: RecordView, name: String, into dst: UnsafeMutableRawBufferPointer,
        threads: Int = 1, verify: Bool = true
    ) throws {
        guard dst.count == record.rawSize else {
            throw WStoreError.invalidArgument("buffer of \(dst.count) bytes for \(name), which has \(record.rawSize)")
        }
        guard record.rawSize > 0 else { return try self.verify(record, name: name, UnsafeRawBufferPointer(dst)) }
        switch record.codec {
        case .raw:
            guard verify else {
                dst.baseAddress!.copyMemory(from: record.payload.baseAddress!, byteCount: record.rawSize)
                return
            }
            if record.hasFrameChecksums {
                // Copy each block, then hash it from cache against its own checksum.
                let payload = record.payload
                try parallelFor(record.frameCount, threads: threads) { b, _ in
                    let start = b * record.frameSize, n = record.frameRawLength(b)
                    (dst.baseAddress! + start).copyMemory(from: payload.baseAddress! + start, byteCount: n)
                    try checkFrame(record, b, UnsafeRawBufferPointer(rebasing: dst[start ..< start + n]), name: name)
                }
                return
            }
            // Version 1: copy and hash in cache-sized pieces, so the hash reads what the copy just wrote.
            let hasher = XXH3Stream()
            var at = 0
            while at < record.rawSize {
                let n = min(copyChunk, record.rawSize - at)
                (dst.baseAddress! + at).copyMemory(from: record.payload.baseAddress! + at, byteCount: n)
                hasher.update(UnsafeRawBufferPointer(rebasing: dst[at ..< at + n]))
                at += n
            }
            let digest = hasher.digest()
            if digest != record.checksum {
                throw WStoreError.checksumMismatch(name: name, expected: record.checksum, actual: digest)
            }
        case .zstd:
            if let digest = try decodeFrames(record, name: name, into: dst, threads: threads, arrive: nil),
                digest != record.checksum
            {
                throw WStoreError.checksumMismatch(name: name, expected: record.checksum, actual: digest)
            }
        }
    }

    /// Bytes copied and hashed at a time when a raw version-1 record is verified while copied.
    static let copyChunk = 256 << 10

    /// Checks `bytes` (the record's raw bytes, decoded or in place) against the record's
    /// stored checksums: each frame's or block's own (version 2, on up to `threads`
    /// threads), or the whole tensor's (version 1).
    package static func verify(
        _ record: RecordView, name: String, _ bytes: UnsafeRawBufferPointer,
        threads: Int = 1
    ) throws {
        if record.hasFrameChecksums {
            guard bytes.count == record.rawSize else {
                throw WStoreError.invalidArgument(
                    "\(bytes.count) bytes to check for \(name), which has \(record.rawSize)")
            }
            try parallelFor(record.frameCount, threads: threads) { f, _ in
                let start = f * record.frameSize
                try checkFrame(
                    record, f, UnsafeRawBufferPointer(rebasing: bytes[start ..< start + record.frameRawLength(f)]),
                    name: name)
            }
            return
        }
        let actual = xxh3(bytes)
        if actual != record.checksum {
            throw WStoreError.checksumMismatch(name: name, expected: record.checksum, actual: actual)
        }
    }

    /// Checks the raw bytes of frame (or block) `f` against its checksum in the header.
    @inline(__always)
    static func checkFrame(
        _ record: RecordView, _ f: Int, _ bytes: UnsafeRawBufferPointer,
        name: String
    ) throws(WStoreError) {
        let actual = xxh3(bytes), expected = record.frameChecksum(f)
        if actual != expected {
            throw .checksumMismatch(
                name: record.frameCount > 1 ? "\(name) (frame \(f))" : name,
                expected: expected, actual: actual)
        }
    }

    /// Decodes every frame into `dst`. A version-2 record's frames are each checked by the
    /// worker that decoded them (returns `nil`); for version 1 returns the xxh3-64 of all of `dst`.
    ///
    /// The hash runs while frames decode: whichever worker finishes a frame hashes every
    /// frame that is ready in order (one worker at a time, outside the lock), so frames
    /// are hashed while still in cache and, on several threads, the hash overlaps the
    /// decoding of later frames instead of running alone at the end.
    /// `arrive(f)`, when given, is called before frame `f` is read, to make its bytes
    /// (the payload up to the end of its last plane) present: a record read from the file
    /// is decoded frame by frame as it arrives.
    static func decodeFrames(
        _ record: RecordView, name: String, into dst: UnsafeMutableRawBufferPointer,
        threads: Int, arrive: ((Int) throws -> Void)?
    ) throws -> UInt64? {
        let planes = record.planeCount
        let workers = max(1, min(threads, record.frameCount))
        let transform = record.transform
        // Per worker: room for every plane of one frame (compressed planes decode here).
        let scratchPerWorker = transform == .none ? 0 : record.frameSize
        let scratch = ScratchPool.take(max(1, workers * scratchPerWorker))
        defer { ScratchPool.give(scratch) }
        let payload = record.payload
        let perFrame = record.hasFrameChecksums
        let hasher = XXH3Stream()
        let cursor = Mutex(HashCursor(frames: perFrame ? 0 : record.frameCount))
        /// Version 2: checks frame `f` against its own checksum. Version 1: marks frame `f`
        /// decoded and, unless another worker is hashing, hashes every frame ready in order.
        func frameDone(_ f: Int) throws {
            if perFrame {
                let start = f * record.frameSize
                try checkFrame(
                    record, f, UnsafeRawBufferPointer(rebasing: dst[start ..< start + record.frameRawLength(f)]),
                    name: name)
                return
            }
            var ready = cursor.withLock { $0.finish(f) }
            while let r = ready {
                let start = r.lowerBound * record.frameSize
                let end = min(record.rawSize, r.upperBound * record.frameSize)
                hasher.update(UnsafeRawBufferPointer(rebasing: dst[start ..< end]))
                ready = cursor.withLock { $0.hashed(r) }
            }
        }
        try parallelFor(record.frameCount, threads: workers) { f, w in
            try arrive?(f)
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
                try frameDone(f)
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
                transform.merge(
                    planes: UnsafePointer(planePointers.baseAddress!), count: planeLength, into: out.baseAddress!)
            }
            try frameDone(f)
        }
        if perFrame { return nil }
        // Every frame was marked done, and the worker hashing at that moment re-checked
        // under the lock before it stopped, so every frame has been hashed.
        precondition(cursor.withLock { $0.next } == record.frameCount, "frames left unhashed")
        return hasher.digest()
    }

    /// Which frames are decoded, and how far the in-order hash has got.
    private struct HashCursor: ~Copyable {
        var next = 0
        var done: [Bool]
        var busy = false

        init(frames: Int) { done = Array(repeating: false, count: frames) }

        /// Marks `f` decoded; returns frames for the caller to hash, if it should.
        mutating func finish(_ f: Int) -> Range<Int>? {
            done[f] = true
            return busy ? nil : claim()
        }

        /// The caller hashed `r`; returns more frames to hash, or releases the hash.
        mutating func hashed(_ r: Range<Int>) -> Range<Int>? {
            next = r.upperBound
            busy = false
            return claim()
        }

        private mutating func claim() -> Range<Int>? {
            var end = next
            while end < done.count && done[end] { end += 1 }
            guard end > next else { return nil }
            busy = true
            return next ..< end
        }
    }

    private static func decompress(
        _ src: UnsafeRawBufferPointer, into dst: UnsafeMutableRawBufferPointer,
        name: String, frame: Int
    ) throws {
        do {
            try Zstd.decompress(src, into: dst)
        } catch let e as ZstdError {
            throw WStoreError.corruptRecord(name: name, reason: "frame \(frame) does not decode: \(e.message)")
        }
    }
}

/// Reusable scratch buffers, for decoding and for encoders' payloads: a fresh large
/// allocation costs a page fault per page on every use, which is as much as the decode
/// of a small frame.
package enum ScratchPool {
    private static let free = Mutex<[UncheckedSendable<UnsafeMutableRawBufferPointer>]>([])
    /// Buffers kept at most; more are released, smallest first. A KV chunk's records take
    /// one buffer each (64 for 32 layers), and a store has two chunks' worth in use.
    private static let keep = 128
    /// Larger buffers are released at once rather than kept.
    private static let largest = 64 << 20
    /// Most bytes kept in all; past it, the smallest buffers are released.
    private static let keptBytes = 256 << 20

    /// A buffer of at least `size` bytes: the smallest free one that fits, or a new one of
    /// ``sizeClass(_:)`` bytes.
    package static func take(_ size: Int) -> UnsafeMutableRawBufferPointer {
        let found = free.withLock { list -> UnsafeMutableRawBufferPointer? in
            var best: Int?
            for i in list.indices where list[i].value.count >= size {
                if best == nil || list[i].value.count < list[best!].value.count { best = i }
            }
            return best.map { list.remove(at: $0).value }
        }
        return found ?? .allocate(byteCount: sizeClass(size), alignment: 64)
    }

    /// The size a new buffer for `size` bytes is made with: `size` rounded up to a whole
    /// 4 KiB page, and above 64 KiB to a quarter of its power of two (at most a quarter more).
    /// Records of nearly the same size (an expert's compressed parts) then share one
    /// buffer instead of each new largest one adding a buffer to the pool; the pages a
    /// caller never touches cost no memory.
    package static func sizeClass(_ size: Int) -> Int {
        let page = 4096
        guard size > 64 << 10 else { return max(page, (size + page - 1) / page * page) }
        let step = (1 << (Int.bitWidth - 1 - size.leadingZeroBitCount)) / 4
        return (size + step - 1) / step * step
    }

    package static func give(_ buffer: UnsafeMutableRawBufferPointer) {
        guard buffer.count <= largest else { return buffer.deallocate() }
        let spill = free.withLock { list -> [UnsafeMutableRawBufferPointer] in
            list.append(UncheckedSendable(buffer))
            var total = list.reduce(0) { $0 + $1.value.count }
            var spill: [UnsafeMutableRawBufferPointer] = []
            while list.count > keep || total > keptBytes {
                let smallest = list.indices.min { list[$0].value.count < list[$1].value.count }!
                total -= list[smallest].value.count
                spill.append(list.remove(at: smallest).value)
            }
            return spill
        }
        for b in spill { b.deallocate() }
    }
}

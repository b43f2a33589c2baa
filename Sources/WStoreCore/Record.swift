/// The on-disk tensor record: a fixed header, a frame table, the payload.
/// format-spec/FORMAT.md §4 is the byte-by-byte description; keep them in step.
package enum Record {
    /// "WSTR"
    package static let magic: UInt32 = 0x5254_5357
    /// The record format version this build writes and the newest it reads.
    /// Version 1 records (one checksum over the whole tensor, not bound to their key)
    /// are still read.
    package static let formatVersion: UInt16 = 2
    /// Raw bytes per checked block of a raw version-2 record (FORMAT.md §4.5).
    package static let defaultBlockSize = 256 << 10
    /// Bytes per frame (or block) checksum.
    package static let frameChecksumSize = 8
    /// Bytes before the shape array.
    package static let fixedHeaderSize = 64
    /// Bytes per frame-table entry.
    package static let frameEntrySize = 16
    /// The largest rank a record holds.
    package static let maxRank = 16
    /// Default raw bytes per frame.
    package static let defaultFrameSize = 1 << 20
    /// LMDB puts the value of an overflow node 16 bytes (PAGEHDRSZ) past a page boundary;
    /// the header is padded so that the payload then starts 64-byte aligned.
    package static let overflowValueOffset = 16

    /// The codec code in the header.
    package enum Codec: UInt8, Sendable {
        /// The payload is the tensor's bytes as they are.
        case raw = 0
        /// The payload is frames of planes, each plane zstd-compressed or stored.
        case zstd = 1

        package var name: String { self == .raw ? "raw" : "zstd" }
    }

    /// The method of one plane of one frame.
    package enum PlaneMethod: UInt32, Sendable {
        case stored = 0
        case zstd = 1
    }

    /// What binds a record to the LMDB key it is stored under: the xxh3-64 of the whole key.
    /// A version-2 header checksum is seeded with it, so a record read under any other key
    /// fails its header check.
    package static func binding(key: UnsafeRawBufferPointer) -> UInt64 { xxh3(key) }

    /// See ``binding(key:)``.
    package static func binding(key: [UInt8]) -> UInt64 { key.withUnsafeBytes { xxh3($0) } }

    /// The header checksum: xxh3-64 of bytes 64..<headerLength, seeded with the xxh3-64
    /// of bytes 0..<56 (everything but the checksum field itself). From version 2 that
    /// inner hash is itself seeded with the record's key ``binding(key:)``; version 1 uses seed 0.
    package static func headerChecksum(_ bytes: UnsafeRawBufferPointer, headerLength: Int, binding: UInt64) -> UInt64 {
        let seed = xxh3(UnsafeRawBufferPointer(rebasing: bytes[0 ..< 56]), seed: binding)
        return xxh3(UnsafeRawBufferPointer(rebasing: bytes[64 ..< headerLength]), seed: seed)
    }

    /// The header length for a rank, frame table and frame checksums, padded so that
    /// `(overflowValueOffset + length) % 64 == 0`.
    package static func headerLength(rank: Int, tableEntries: Int, frameChecksums: Int = 0) -> Int {
        let unpadded = fixedHeaderSize + 8 * rank + frameEntrySize * tableEntries + frameChecksumSize * frameChecksums
        var len = unpadded
        let rem = (overflowValueOffset + len) % 64
        if rem != 0 { len += 64 - rem }
        return len
    }
}

/// A parsed, validated record header, viewing bytes that belong to someone else
/// (usually a read transaction).
package struct RecordView {
    package let bytes: UnsafeRawBufferPointer
    package let version: UInt16
    package let headerLength: Int
    package let dtype: DType
    package let codec: Record.Codec
    package let transform: PlaneTransform
    package let shape: [Int]
    package let rawSize: Int
    package let storedSize: Int
    package let checksum: UInt64
    /// The key binding the record was parsed with (to parse a copy of it the same way).
    package let binding: UInt64
    /// Raw bytes per frame (zstd) or per checked block (raw, version 2).
    package let frameSize: Int
    /// Frames (zstd) or checked blocks (raw, version 2); 0 for a raw version-1 record.
    package let frameCount: Int
    /// Where the per-frame checksums start in the header (version 2), else `nil`.
    let frameChecksumsAt: Int?

    /// The stored payload: the tensor bytes themselves for ``Record/Codec/raw``.
    package var payload: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: bytes[headerLength ..< headerLength + storedSize])
    }

    package var planeCount: Int { transform.width }

    /// Frame-table entry for frame `f`, plane `p`: offset into the payload, stored size, method.
    package func entry(frame f: Int, plane p: Int) -> (offset: Int, size: Int, method: Record.PlaneMethod) {
        let at = Record.fixedHeaderSize + 8 * shape.count + Record.frameEntrySize * (f * planeCount + p)
        let off = Int(UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: at, as: UInt64.self)))
        let size = Int(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: at + 8, as: UInt32.self)))
        let method = Record.PlaneMethod(
            rawValue: UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: at + 12, as: UInt32.self)))!
        return (off, size, method)
    }

    /// The xxh3-64 of the raw bytes of frame (or block) `f`, from the header (version 2 only).
    package func frameChecksum(_ f: Int) -> UInt64 {
        UInt64(
            littleEndian: bytes.loadUnaligned(
                fromByteOffset: frameChecksumsAt! + Record.frameChecksumSize * f, as: UInt64.self))
    }

    /// Whether every frame (or block) carries its own checksum (version 2).
    package var hasFrameChecksums: Bool { frameChecksumsAt != nil }

    /// Raw bytes covered by frame `f`.
    package func frameRawLength(_ f: Int) -> Int {
        f == frameCount - 1 ? rawSize - f * frameSize : frameSize
    }

    /// Parses and checks a record header against the bytes it came with and the key it
    /// was found under.
    ///
    /// Every offset and size is bounds-checked before use, so a damaged header gives
    /// an error, never an out-of-bounds read.
    /// - Parameter binding: ``Record/binding(key:)`` of the key the record was read under;
    ///   a version-2 record written under another key fails its header checksum.
    /// - Throws: ``WStoreError/newerFormat(what:found:supported:)`` for a record written
    ///   by a newer format, ``WStoreError/corruptRecord(name:reason:)`` otherwise.
    package init(_ bytes: UnsafeRawBufferPointer, binding: UInt64, name: @autoclosure () -> String) throws(WStoreError)
    {
        func corrupt(_ why: String) -> WStoreError { .corruptRecord(name: name(), reason: why) }
        func u16(_ o: Int) -> UInt16 { UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: o, as: UInt16.self)) }
        func u32(_ o: Int) -> UInt32 { UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: o, as: UInt32.self)) }
        func u64(_ o: Int) -> UInt64 { UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: o, as: UInt64.self)) }

        guard bytes.count >= Record.fixedHeaderSize else {
            throw corrupt("record is \(bytes.count) bytes, shorter than its header")
        }
        guard u32(0) == Record.magic else { throw corrupt("bad magic") }
        let version = u16(4)
        guard version <= Record.formatVersion else {
            throw .newerFormat(what: "tensor \(name())", found: Int(version), supported: Int(Record.formatVersion))
        }
        guard version >= 1 else { throw corrupt("format version 0") }
        let headerLength = Int(u32(8))
        guard headerLength >= Record.fixedHeaderSize, headerLength <= bytes.count else {
            throw corrupt("header length \(headerLength) outside the record (\(bytes.count) bytes)")
        }
        guard Record.headerChecksum(bytes, headerLength: headerLength, binding: version >= 2 ? binding : 0) == u64(56)
        else {
            throw corrupt(
                version >= 2
                    ? "header checksum mismatch (damaged, or not the record of this key)"
                    : "header checksum mismatch")
        }

        let ggmlType = u32(16)
        guard let dtype = DType(code: bytes[12], ggmlType: ggmlType) else {
            throw corrupt("unknown dtype code \(bytes[12])")
        }
        guard let codec = Record.Codec(rawValue: bytes[13]) else { throw corrupt("unknown codec \(bytes[13])") }
        guard let transform = PlaneTransform(rawValue: bytes[14]) else {
            throw corrupt("unknown transform \(bytes[14])")
        }
        let rank = Int(bytes[15])
        guard rank <= Record.maxRank else { throw corrupt("rank \(rank) above \(Record.maxRank)") }
        guard Int(u32(20)) == transform.width else { throw corrupt("plane count \(u32(20)) does not match transform") }
        guard u64(24) <= UInt64(Int.max), u64(32) <= UInt64(Int.max) else { throw corrupt("size out of range") }
        let rawSize = Int(u64(24)), storedSize = Int(u64(32))
        let frameSize = Int(u32(48)), frameCount = Int(u32(52))
        guard Record.fixedHeaderSize + 8 * rank <= headerLength else { throw corrupt("shape runs past the header") }
        var shape: [Int] = []
        shape.reserveCapacity(rank)
        var elements = 1
        for i in 0 ..< rank {
            let d = u64(Record.fixedHeaderSize + 8 * i)
            guard d <= UInt64(Int32.max) * 64 else { throw corrupt("dimension \(d) out of range") }
            shape.append(Int(d))
            let (m, o) = elements.multipliedReportingOverflow(by: Int(d))
            guard !o else { throw corrupt("shape overflows") }
            elements = m
        }
        if dtype.bitWidth != nil {
            guard dtype.byteCount(elements: elements) == rawSize else {
                throw corrupt("shape \(shape) of \(dtype) does not take raw size \(rawSize)")
            }
        }
        guard storedSize <= bytes.count - headerLength else {
            throw corrupt(
                "payload of \(storedSize) bytes runs past the record (\(bytes.count - headerLength) bytes after the header)"
            )
        }
        guard rawSize % transform.width == 0 else {
            throw corrupt("raw size \(rawSize) not a multiple of the transform width")
        }

        var checksumsAt: Int? = nil
        switch codec {
        case .raw where version == 1:
            guard storedSize == rawSize, frameCount == 0, transform == .none else {
                throw corrupt("raw record with frames or sizes that differ")
            }
        case .raw:
            guard storedSize == rawSize, transform == .none else { throw corrupt("raw record with sizes that differ") }
            guard frameSize > 0 else { throw corrupt("block size \(frameSize)") }
            guard frameCount == (rawSize + frameSize - 1) / frameSize else {
                throw corrupt("\(frameCount) blocks for \(rawSize) bytes in blocks of \(frameSize)")
            }
            checksumsAt = Record.fixedHeaderSize + 8 * rank
            guard checksumsAt! + Record.frameChecksumSize * frameCount <= headerLength else {
                throw corrupt("block checksums run past the header")
            }
        case .zstd:
            guard frameSize > 0, frameSize % transform.width == 0 else { throw corrupt("frame size \(frameSize)") }
            let expectedFrames = (rawSize + frameSize - 1) / frameSize
            guard frameCount == expectedFrames else {
                throw corrupt("\(frameCount) frames for \(rawSize) bytes in frames of \(frameSize)")
            }
            let tableEnd = Record.fixedHeaderSize + 8 * rank + Record.frameEntrySize * frameCount * transform.width
            let end = version >= 2 ? tableEnd + Record.frameChecksumSize * frameCount : tableEnd
            guard end <= headerLength else { throw corrupt("frame table runs past the header") }
            if version >= 2 { checksumsAt = tableEnd }
        }
        self.bytes = bytes
        self.version = version
        self.headerLength = headerLength
        self.dtype = dtype
        self.codec = codec
        self.transform = transform
        self.shape = shape
        self.rawSize = rawSize
        self.storedSize = storedSize
        self.checksum = u64(40)
        self.binding = binding
        self.frameSize = frameSize
        self.frameCount = frameCount
        self.frameChecksumsAt = checksumsAt

        // Each frame-table entry must stay inside the payload and match its plane.
        if codec == .zstd {
            for f in 0 ..< frameCount {
                let planeLength = frameRawLength(f) / transform.width
                for p in 0 ..< transform.width {
                    let at = Record.fixedHeaderSize + 8 * rank + Record.frameEntrySize * (f * transform.width + p)
                    let off = u64(at), size = UInt64(u32(at + 8)), method = u32(at + 12)
                    guard let m = Record.PlaneMethod(rawValue: method) else {
                        throw corrupt("frame \(f) plane \(p): unknown method \(method)")
                    }
                    guard off <= UInt64(storedSize), size <= UInt64(storedSize) - off else {
                        throw corrupt("frame \(f) plane \(p) lies outside the payload")
                    }
                    if m == .stored && Int(size) != planeLength {
                        throw corrupt("frame \(f) plane \(p): stored size \(size) ≠ \(planeLength)")
                    }
                }
            }
        }
    }
}

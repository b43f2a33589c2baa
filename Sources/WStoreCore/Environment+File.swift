import CLMDB

/// Reading and writing large values through the data file itself, beside the map.
///
/// A value larger than about half a page lives on LMDB overflow pages: contiguous pages
/// of the data file, the first one starting with a 16-byte page header (lmdb.c,
/// `MDB_page`: `mp_pgno` (size_t), `mp_pad` (u16), `mp_flags` (u16), `mp_pages` (u32);
/// `PAGEHDRSZ` 16; overflow data at `METADATA(page)`). So such a value can be read with
/// pread(2) at `mp_pgno * psize + 16`, exactly its bytes, instead of faulting the map,
/// whose faults read the disk's whole readahead window around each page.
extension LMDBEnvironment {
    /// lmdb.c `PAGEHDRSZ` on 64-bit builds.
    private static let pageHeaderSize = 16
    /// lmdb.c `P_OVERFLOW`.
    private static let overflowFlag: UInt16 = 0x04

    /// The data file's descriptor, LMDB's own. The corresponding C function is `mdb_env_get_fd`.
    var fileDescriptor: Int32 {
        var fd: mdb_filehandle_t = -1
        mdb_env_get_fd(env, &fd)
        return fd
    }

    /// The offset in the data file of `value`, bytes lent by a transaction of this
    /// environment, when they are on overflow pages; `nil` otherwise (a small value in a
    /// leaf page). Reads the page header just before `value`, which is on the value's
    /// own first page.
    package func fileOffset(of value: UnsafeRawBufferPointer) -> Int? {
        guard let base = value.baseAddress, value.count > 0 else { return nil }
        let psize = pageSize
        let page = base - Self.pageHeaderSize
        guard UInt(bitPattern: page) % UInt(psize) == 0 else { return nil }
        let pgno = page.loadUnaligned(as: UInt.self)
        let flags = page.loadUnaligned(fromByteOffset: 10, as: UInt16.self)
        let pages = page.loadUnaligned(fromByteOffset: 12, as: UInt32.self)
        guard flags & Self.overflowFlag != 0, Int(pages) * psize >= value.count + Self.pageHeaderSize,
            pgno <= UInt(Int.max / psize)
        else { return nil }
        return Int(pgno) * psize + Self.pageHeaderSize
    }

    /// Reads `buffer.count` bytes of the data file at `offset` (``Posix/pread(_:into:at:path:)``).
    /// - Throws: ``WStoreError/corruptRecord(name:reason:)`` when the file ends first
    ///   (`name` names the record), ``WStoreError/io(call:path:errno:)`` on an I/O error.
    package func readFile(into buffer: UnsafeMutableRawBufferPointer, at offset: Int, name: @autoclosure () -> String)
        throws
    {
        let done = try Posix.pread(fileDescriptor, into: buffer, at: offset, path: dataFilePath)
        if done < buffer.count {
            throw WStoreError.corruptRecord(
                name: name(), reason: "data.mdb ends at \(offset + done), inside the record")
        }
    }

    /// Writes `bytes` into the data file at `offset` (``Posix/pwrite(_:_:at:path:)``).
    /// - Throws: ``WStoreError/io(call:path:errno:)``.
    package func writeFile(_ bytes: UnsafeRawBufferPointer, at offset: Int) throws {
        try Posix.pwrite(fileDescriptor, bytes, at: offset, path: dataFilePath)
    }

    /// Stores `value` under `key` in `txn`, a write transaction of this environment, as
    /// ``WriteTransaction/put(_:_:_:)`` does; but with ``writeMap``, a value that LMDB puts
    /// on overflow pages is written with pwrite(2) at its place in the data file instead
    /// of through the map. Written through the map, each page of a new value first
    /// faults in as a read of the file (a hole, zero-filled and read ahead), then as a
    /// write; pwrite fills the same page-cache pages without either. A commit's msync
    /// (MS_SYNC, which syncs the file's range however its pages were dirtied) makes them
    /// durable as before.
    /// - Throws: ``LMDBError`` from LMDB, ``WStoreError/io(call:path:errno:)`` from pwrite.
    package func put(
        _ txn: borrowing WriteTransaction, _ db: LMDBDatabase, _ key: [UInt8], _ value: UnsafeRawBufferPointer
    ) throws {
        guard writeMap, value.count >= pageSize else { return try txn.put(db, key, value) }
        try put(txn, db, key, pieces: [value])
    }

    /// Stores under `key` the value made of `pieces` back to back, as
    /// ``put(_:_:_:_:)`` stores one buffer: on overflow pages with ``writeMap``, all of
    /// them with one pwritev(2) at the value's place in the data file, so a value
    /// assembled from parts (a KV chunk's records) is never copied together first.
    /// - Throws: ``LMDBError`` from LMDB, ``WStoreError/io(call:path:errno:)`` from pwritev.
    package func put(
        _ txn: borrowing WriteTransaction, _ db: LMDBDatabase, _ key: [UInt8], pieces: [UnsafeRawBufferPointer]
    ) throws {
        let size = pieces.reduce(0) { $0 + $1.count }
        try txn.reserve(db, key, size: size) { dst in
            if writeMap, size >= pageSize, let offset = fileOffset(of: UnsafeRawBufferPointer(dst)) {
                try Posix.pwritev(fileDescriptor, pieces, at: offset, path: dataFilePath)
                // Only the first page, which LMDB wrote the page header into, was mapped.
                PageCache.unmapPages(UnsafeRawBufferPointer(dst))
            } else {
                var at = 0
                for p in pieces where p.count > 0 {
                    (dst.baseAddress! + at).copyMemory(from: p.baseAddress!, byteCount: p.count)
                    at += p.count
                }
            }
        }
    }

    /// Copies `count` bytes of file `source` (open as a descriptor, at `sourceOffset`,
    /// named `sourcePath`) into the data file at `offset` inside the kernel
    /// (``Posix/copyFileRange(from:at:to:at:count:paths:)``).
    /// - Returns: `false`, having copied nothing, when the kernel cannot copy between the
    ///   two files; write the bytes with ``writeFile(_:at:)`` then.
    /// - Throws: ``WStoreError/io(call:path:errno:)``.
    package func copyIntoFile(
        from source: Int32, at sourceOffset: Int, sourcePath: String, count: Int, to offset: Int
    ) throws -> Bool {
        try Posix.copyFileRange(
            from: source, at: sourceOffset, to: fileDescriptor, at: offset, count: count,
            paths: "\(sourcePath) -> \(dataFilePath)")
    }

    /// Asks the kernel to start reading exactly `length` bytes at `offset` into the page
    /// cache (posix_fadvise `POSIX_FADV_WILLNEED`), and no more: the reads that follow
    /// wait only for what they need, and nothing around the range is read ahead.
    package func adviseWillNeed(offset: Int, length: Int) {
        Posix.adviseFile(fileDescriptor, offset: offset, length: length, .willNeed)
    }

    /// Drops the clean page-cache pages of `length` bytes at `offset` (posix_fadvise
    /// `POSIX_FADV_DONTNEED`); pages another mapping still holds stay.
    package func dropFileCache(offset: Int, length: Int) {
        Posix.adviseFile(fileDescriptor, offset: offset, length: length, .dontNeed)
    }

    /// Drops every page of the record at `offset` (as ``fileOffset(of:)`` gives it) of
    /// `length` bytes, its first page with the page header and its last partial page
    /// included: overflow pages hold one value only.
    package func dropRecordPages(offset: Int, length: Int) {
        let page = PageCache.pageSize
        let start = offset - offset % page, end = (offset + length + page - 1) / page * page
        dropFileCache(offset: start, length: end - start)
    }

    /// Starts writing back every dirty page of the data file without waiting
    /// (``Posix/startWriteback(_:)``), so a bulk load's disk writes overlap its work
    /// instead of all waiting for the final ``sync(force:)``. A hint only.
    package func startWriteback() { Posix.startWriteback(fileDescriptor) }

    /// Shortens the data file of the closed environment at `path` to `bytes`
    /// (``usedBytes`` read before closing it) and fsyncs it: a `MDB_WRITEMAP`
    /// environment leaves its file as long as its map. Never lengthens it.
    /// - Throws: ``WStoreError/io(call:path:errno:)`` when the file cannot be opened,
    ///   truncated or synced.
    package static func trimDataFile(path: String, to bytes: Int) throws {
        let file = path + "/data.mdb"
        let fd = try Posix.openForUpdate(file)
        defer { Posix.close(fd) }
        guard try Posix.fileStatus(fd, path: file).size > bytes else { return }
        try Posix.truncate(fd, to: bytes, path: file)
        try Posix.fsync(fd, path: file)
    }
}

extension LMDBEnvironment {
    /// Before `value` (on overflow pages) is read: when its first or last page is not in
    /// memory (mincore(2)), asks for exactly its range (``adviseWillNeed(offset:length:)``),
    /// so the faults or reads that follow find the pages on their way instead of each
    /// reading one page (``Options/noReadahead``) or a whole readahead window. Call it
    /// before touching `value`: the range is found from the map's address, without
    /// reading the value's page header, so the record's first page comes with the rest
    /// in one request. Costs three mincore calls when the value is warm.
    package func prepareToRead(_ value: UnsafeRawBufferPointer) {
        guard value.count > PageCache.pageSize, let base = value.baseAddress else { return }
        // The first, middle and last pages: a record whose ends stayed (a partial drop)
        // but whose middle went is still cold.
        var warm = true
        for at in [0, value.count / 2, value.count - 1] where warm {
            warm = Posix.pageIsResident(base + at)
        }
        guard !warm, let offset = mapOffset(of: value) else { return }
        let start = offset - offset % PageCache.pageSize
        adviseWillNeed(offset: start, length: offset + value.count - start)
    }

    /// The file offset of `value` by its distance from the start of the map, which is
    /// found in /proc/self/maps (LMDB does not publish its map address) and cached. A
    /// hint only: a map moved since is noticed when `value` falls outside it, and a
    /// stale answer would only advise the wrong range.
    func mapOffset(of value: UnsafeRawBufferPointer) -> Int? {
        let p = Int(bitPattern: value.baseAddress)
        let size = mapSize
        let cached = mapStart.load(ordering: .relaxed)
        if cached != 0, p >= cached, p + value.count <= cached + size { return p - cached }
        guard let start = Self.findMapping(containing: p), p + value.count <= start + size else { return nil }
        mapStart.store(start, ordering: .relaxed)
        return p - start
    }

    /// The address at which file offset 0 of the mapping holding `address` sits, from /proc/self/maps.
    private static func findMapping(containing address: Int) -> Int? {
        guard let maps = try? Posix.readToEnd("/proc/self/maps") else { return nil }
        for line in maps.split(separator: UInt8(ascii: "\n")) {
            // "start-end perms offset dev inode path"
            let fields = String(decoding: line, as: UTF8.self).split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 6 else { continue }
            let range = fields[0].split(separator: "-")
            guard range.count == 2, let lo = Int(range[0], radix: 16), let hi = Int(range[1], radix: 16),
                let offset = Int(fields[2], radix: 16), address >= lo, address < hi
            else { continue }
            return lo - offset
        }
        return nil
    }
}

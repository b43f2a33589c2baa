#if canImport(Glibc)
    import Glibc
#endif

/// Dropping file pages from memory, so a benchmark can measure cold reads.
package enum PageCache {
    /// The system page size.
    package static let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))

    /// Unmaps this process's page-table entries for the pages under `range` of a
    /// read-only shared mapping (madvise `MADV_DONTNEED`: the next access faults the page
    /// in again, from the page cache or, once dropped there too, from disk).
    package static func unmapPages(_ range: UnsafeRawBufferPointer) {
        Posix.adviseDontNeed(range)
    }

    /// Asks the kernel to drop the clean cached pages of the file at `path`
    /// (posix_fadvise `POSIX_FADV_DONTNEED`). Pages still mapped are kept by the kernel.
    /// - Returns: `false` if the file could not be opened.
    @discardableResult
    package static func drop(path: String) -> Bool {
        guard let fd = try? Posix.openForReading(path) else { return false }
        defer { Posix.close(fd) }
        return Posix.dropCachedPages(fd)
    }
}

extension LMDBEnvironment {
    /// The path of the data file (`data.mdb`).
    package var dataFilePath: String { path + "/data.mdb" }
}

extension PageCache {
    /// Bytes of the file at `path` in the page cache: mincore(2) over a mapping of the
    /// file made for the purpose (it reports the page cache, whoever maps the pages).
    /// `nil` when the file cannot be opened or mapped.
    package static func cachedBytes(path: String) -> Int? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { return nil }
        let size = Int(st.st_size)
        guard size > 0 else { return 0 }
        guard let map = mmap(nil, size, PROT_READ, MAP_SHARED, fd, 0), map != MAP_FAILED else { return nil }
        defer { munmap(map, size) }
        let pages = (size + pageSize - 1) / pageSize
        var vec = [UInt8](repeating: 0, count: pages)
        guard mincore(map, size, &vec) == 0 else { return nil }
        return vec.reduce(0) { $0 + Int($1 & 1) } * pageSize
    }

    /// This process's resident set in bytes (/proc/self/statm, second field); 0 if unreadable.
    package static func residentSetBytes() -> Int {
        guard let f = fopen("/proc/self/statm", "r") else { return 0 }
        defer { fclose(f) }
        var line = [CChar](repeating: 0, count: 256)
        guard fgets(&line, Int32(line.count), f) != nil else { return 0 }
        let fields = String(cString: line).split(separator: " ")
        guard fields.count >= 2, let pages = Int(fields[1]) else { return 0 }
        return pages * pageSize
    }
}

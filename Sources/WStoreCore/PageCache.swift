/// Dropping file pages from memory, so a benchmark can measure cold reads.
package enum PageCache {
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

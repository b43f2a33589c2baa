import CLMDB
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
        guard let base = range.baseAddress, range.count > 0 else { return }
        let start = UInt(bitPattern: base) & ~UInt(pageSize - 1)
        let end = UInt(bitPattern: base) + UInt(range.count)
        _ = madvise(UnsafeMutableRawPointer(bitPattern: start), Int(end - start), MADV_DONTNEED)
    }

    /// Asks the kernel to drop the clean cached pages of the file at `path`
    /// (posix_fadvise `POSIX_FADV_DONTNEED`). Pages still mapped are kept by the kernel.
    /// - Returns: `false` if the file could not be opened.
    @discardableResult
    package static func drop(path: String) -> Bool {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) == 0
    }
}

extension LMDBEnvironment {
    /// The path of the data file (`data.mdb`).
    package var dataFilePath: String { path + "/data.mdb" }
}

/// A file opened for reading with pread(2), for baseline measurements.
package final class ReadOnlyFile: @unchecked Sendable {
    package let path: String
    private let fd: Int32

    package init?(path: String) {
        self.path = path
        fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { return nil }
    }

    deinit { if fd >= 0 { close(fd) } }

    /// Reads `buffer.count` bytes at `offset` into `buffer`; returns whether all arrived.
    package func pread(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) -> Bool {
        var done = 0
        while done < buffer.count {
            let n = Glibc.pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset + done))
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return false }
            done += n
        }
        return true
    }

    /// Drops this file's clean pages from the page cache.
    package func dropCache() { _ = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) }
}

import WStoreCore

/// A file opened for reading with pread(2), for the baselines of `wstore bench load`.
final class ReadOnlyFile {
    let path: String
    private let fd: Int32

    /// Opens `path`.
    /// - Throws: ``WStoreError/io(call:path:errno:)``.
    init(path: String) throws {
        self.path = path
        fd = try Posix.openForReading(path)
    }

    deinit { Posix.close(fd) }

    /// Reads `buffer.count` bytes at `offset` into `buffer`; returns whether all arrived.
    /// - Throws: ``WStoreError/io(call:path:errno:)``.
    func pread(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws -> Bool {
        try Posix.pread(fd, into: buffer, at: offset, path: path) == buffer.count
    }

    /// Drops this file's clean pages from the page cache.
    func dropCache() { Posix.dropCachedPages(fd) }
}

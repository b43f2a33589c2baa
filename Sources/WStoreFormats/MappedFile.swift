import WStoreCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A whole file mapped read-only into memory, unmapped when the last reference goes.
///
/// - Warning: buffers lent by ``bytes`` point into the mapping and are valid only as
///   long as this object lives; a file truncated by another process while mapped
///   raises SIGBUS on access, as with any mmap.
package final class MappedFile: @unchecked Sendable {
    /// The file's path.
    package let path: String
    /// The file's size in bytes.
    package let size: Int
    private let base: UnsafeRawPointer?

    /// Maps `path` read-only.
    /// - Throws: ``ImportError`` when the file cannot be opened or mapped.
    package init(path: String) throws(ImportError) {
        self.path = path
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ImportError(file: path, "cannot open: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw ImportError(file: path, "cannot stat: \(String(cString: strerror(errno)))") }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw ImportError(file: path, "not a regular file") }
        size = Int(st.st_size)
        if size == 0 {
            base = nil
            return
        }
        // mmap(2): the mapping stays valid after the descriptor is closed.
        let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0)
        guard let p, p != MAP_FAILED else { throw ImportError(file: path, "cannot map: \(String(cString: strerror(errno)))") }
        base = UnsafeRawPointer(p)
    }

    deinit {
        if let base { munmap(UnsafeMutableRawPointer(mutating: base), size) }
    }

    /// The whole file. Valid while this object lives.
    package var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: size) }

    /// Bytes `range` of the file. Valid while this object lives.
    package func bytes(_ range: Range<Int>) -> UnsafeRawBufferPointer {
        precondition(range.lowerBound >= 0 && range.upperBound <= size)
        return UnsafeRawBufferPointer(rebasing: bytes[range])
    }

    /// Asks the kernel to read `range` ahead (madvise WILLNEED); a hint only.
    package func prefetch(_ range: Range<Int>) {
        guard let base, !range.isEmpty else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = range.lowerBound - range.lowerBound % page
        _ = madvise(UnsafeMutableRawPointer(mutating: base + start), range.upperBound - start, MADV_WILLNEED)
    }

    /// Lets go of this process's page-table entries for `range` (madvise `MADV_DONTNEED`
    /// on this read-only private mapping, never written: the bytes stay the file's, and
    /// the next access maps them again from the page cache or the disk), so a pass over
    /// a large file keeps only what it is working on resident.
    package func release(_ range: Range<Int>) {
        guard base != nil, !range.isEmpty else { return }
        PageCache.unmapPages(bytes(range))
    }
}

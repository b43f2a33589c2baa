#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Whole pages of anonymous memory that can be made read-only once filled: the buffers
/// of resident experts, so a write through a pointer lent to an engine faults at once
/// instead of corrupting what every later reader gets.
///
/// The corresponding C functions are `mmap`, `mprotect` and `munmap`.
package enum ReadOnlyPages {
    /// The system page size.
    package static let pageSize: Int = Int(sysconf(Int32(_SC_PAGESIZE)))

    /// `byteCount` rounded up to whole pages (at least one).
    package static func rounded(_ byteCount: Int) -> Int {
        max(pageSize, (byteCount + pageSize - 1) / pageSize * pageSize)
    }

    /// Maps `rounded(byteCount)` bytes of zeroed, writable, page-aligned memory.
    /// - Throws: ``WStoreError/io(call:path:errno:)`` when the system refuses the memory.
    package static func allocate(_ byteCount: Int) throws(WStoreError) -> UnsafeMutableRawPointer {
        let n = rounded(byteCount)
        guard let p = mmap(nil, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), p != MAP_FAILED else {
            throw .io(call: "mmap of \(n) bytes for a resident expert", path: "", errno: errno)
        }
        return p
    }

    /// Makes the pages read-only: a later write through any pointer into them is SIGSEGV.
    /// lmdb.h is not involved; mprotect(2): the range must be page-aligned, as allocate's is.
    package static func protect(_ p: UnsafeMutableRawPointer, _ byteCount: Int) {
        let rc = mprotect(p, rounded(byteCount), PROT_READ)
        precondition(rc == 0, "mprotect of a resident buffer failed: \(Posix.message(errno: errno))")
    }

    /// Unmaps memory from ``allocate(_:)`` (read-only or not).
    package static func free(_ p: UnsafeMutableRawPointer, _ byteCount: Int) {
        let rc = munmap(p, rounded(byteCount))
        precondition(rc == 0, "munmap of a resident buffer failed: \(Posix.message(errno: errno))")
    }
}

import WStoreCore

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
    /// - Throws: ``ImportError`` naming the file, the call that failed and why, when the
    ///   file cannot be opened or mapped or is not a regular file.
    package init(path: String) throws(ImportError) {
        self.path = path
        do {
            let fd = try Posix.openForReading(path)
            defer { Posix.close(fd) }
            let status = try Posix.fileStatus(fd, path: path)
            guard status.isRegularFile else { throw ImportError(file: path, "not a regular file") }
            size = status.size
            // mmap(2): the mapping stays valid after the descriptor is closed.
            base = size == 0 ? nil : try Posix.mapReadOnly(fd, size: size, path: path)
        } catch let e as ImportError {
            throw e
        } catch let WStoreError.io(call, _, code) {
            throw ImportError(file: path, "cannot \(call): \(Posix.message(errno: code))")
        } catch {
            preconditionFailure("Posix throws only WStoreError.io: \(error)")
        }
    }

    /// A private anonymous mapping holding a copy of `bytes`, standing for a file called
    /// `path` (for parsing bytes that are not in a file: fuzzing, tests).
    package init(copying bytes: UnsafeRawBufferPointer, path: String) {
        self.path = path
        size = bytes.count
        guard size > 0 else {
            base = nil
            return
        }
        base = Posix.mapCopy(of: bytes)
    }

    deinit {
        if let base { Posix.unmap(base, size: size) }
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
        guard base != nil, !range.isEmpty else { return }
        Posix.adviseWillNeed(bytes(range))
    }
}

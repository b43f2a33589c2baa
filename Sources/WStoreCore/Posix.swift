import Glibc
import Synchronization

#if !os(Linux)
    #error("wstore builds and runs on Linux only: it calls Glibc, posix_fadvise and renameat2 directly (see README)")
#endif

/// The one place wstore calls the operating system's file, memory and process functions.
///
/// Every call that can fail goes through ``syscall(_:_:_:)``, which retries `EINTR` and
/// turns errno into ``WStoreError/io(call:path:errno:)`` with the call's name and the path,
/// built on the spot (after swift-nio's `NIOPosix/System.swift` and swift-system's `Errno`).
/// Nothing outside this module imports Glibc.
package enum Posix {
    // MARK: The funnel

    /// Runs `body`, a call that returns -1 and sets errno on failure; retries it on `EINTR`.
    /// A matching injected fault (``injectFault(call:under:errno:)``) fails it without running it.
    /// - Throws: ``WStoreError/io(call:path:errno:)``.
    @inline(__always)
    static func syscall<T: BinaryInteger>(_ call: String, _ path: String, _ body: () -> T) throws(WStoreError) -> T {
        if faultCount.load(ordering: .relaxed) > 0, let e = injectedFault(call, path) {
            throw .io(call: call, path: path, errno: e)
        }
        while true {
            let r = body()
            if r != -1 { return r }
            let e = errno
            if e == EINTR { continue }
            throw .io(call: call, path: path, errno: e)
        }
    }

    /// strerror(3) of `code`, one line.
    package static func message(errno code: Int32) -> String { String(cString: strerror(code)) }

    // MARK: Fault injection

    /// A fault a test asked for: `call` on paths under `prefix` fails with `errno`.
    private struct Fault: Sendable {
        var call: String
        var prefix: String
        var errno: Int32
    }

    private static let faults = Mutex<(next: Int, rules: [Int: Fault])>((0, [:]))
    private static let faultCount = Atomic<Int>(0)

    /// Makes every later `call` (`"write"`, `"fsync"`, `"rename"`, `"renameat2"`, `"open"`,
    /// `"mkdir"`, ...) on a path that starts with `prefix` fail with `errno`, until
    /// ``removeFault(_:)``. For tests: a fault is scoped by path, so tests running side by side
    /// in one process do not see each other's faults.
    /// - Returns: a token for ``removeFault(_:)``.
    package static func injectFault(call: String, under prefix: String, errno: Int32 = EIO) -> Int {
        let token = faults.withLock { f in
            f.next += 1
            f.rules[f.next] = Fault(call: call, prefix: prefix, errno: errno)
            return f.next
        }
        faultCount.add(1, ordering: .relaxed)
        return token
    }

    /// Removes a fault set by ``injectFault(call:under:errno:)``.
    package static func removeFault(_ token: Int) {
        if faults.withLock({ $0.rules.removeValue(forKey: token) }) != nil {
            faultCount.subtract(1, ordering: .relaxed)
        }
    }

    private static func injectedFault(_ call: String, _ path: String) -> Int32? {
        faults.withLock { f in f.rules.values.first { $0.call == call && path.hasPrefix($0.prefix) }?.errno }
    }

    // MARK: Files

    /// open(2) for reading.
    package static func openForReading(_ path: String) throws(WStoreError) -> Int32 {
        try syscall("open", path) { open(path, O_RDONLY | O_CLOEXEC) }
    }

    /// open(2) creating or truncating `path` for writing.
    package static func create(_ path: String, mode: mode_t = 0o644) throws(WStoreError) -> Int32 {
        try syscall("open", path) { open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode) }
    }

    /// close(2). Not retried: on Linux the descriptor is gone even when close reports EINTR.
    package static func close(_ fd: Int32) { _ = Glibc.close(fd) }

    /// write(2) of all of `bytes`, continuing after short writes.
    /// - Throws: ``WStoreError/io(call:path:errno:)`` naming `path`.
    package static func write(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, path: String) throws(WStoreError) {
        var at = 0
        while at < bytes.count {
            let n = try syscall("write", path) { Glibc.write(fd, bytes.baseAddress! + at, bytes.count - at) }
            guard n > 0 else { throw .io(call: "write", path: path, errno: EIO) }
            at += n
        }
    }

    /// pread(2) into all of `buffer` from `offset`, continuing after short reads.
    /// - Returns: the bytes read, fewer than `buffer.count` only at the end of the file.
    package static func pread(
        _ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, at offset: Int,
        path: String
    ) throws(WStoreError) -> Int {
        var done = 0
        while done < buffer.count {
            let n = try syscall("pread", path) {
                Glibc.pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset + done))
            }
            if n == 0 { break }
            done += n
        }
        return done
    }

    /// pwrite(2) of all of `bytes` at `offset`, continuing after short writes.
    /// - Throws: ``WStoreError/io(call:path:errno:)`` naming `path`.
    package static func pwrite(
        _ fd: Int32, _ bytes: UnsafeRawBufferPointer, at offset: Int, path: String
    ) throws(WStoreError) {
        var done = 0
        while done < bytes.count {
            let n = try syscall("pwrite", path) {
                Glibc.pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset + done))
            }
            guard n > 0 else { throw .io(call: "pwrite", path: path, errno: EIO) }
            done += n
        }
    }

    /// pwritev(2) of `pieces`, one after the other from `offset`, continuing after short
    /// writes: one call for many buffers, so a page that several of them fill is written
    /// whole (never read first, as a partial write of a page not in memory would be).
    /// - Throws: ``WStoreError/io(call:path:errno:)`` naming `path`.
    package static func pwritev(
        _ fd: Int32, _ pieces: [UnsafeRawBufferPointer], at offset: Int, path: String
    ) throws(WStoreError) {
        let nonEmpty = pieces.filter { $0.count > 0 }
        let iov = UnsafeMutableBufferPointer<iovec>.allocate(capacity: max(1, nonEmpty.count))
        defer { iov.deallocate() }
        for (i, b) in nonEmpty.enumerated() {
            iov[i] = iovec(iov_base: UnsafeMutableRawPointer(mutating: b.baseAddress!), iov_len: b.count)
        }
        var first = 0, done = 0
        while first < nonEmpty.count {
            let count = Int32(min(nonEmpty.count - first, 1024))  // IOV_MAX on Linux
            let n = try syscall("pwritev", path) {
                Glibc.pwritev(fd, iov.baseAddress! + first, count, off_t(offset + done))
            }
            guard n > 0 else { throw .io(call: "pwritev", path: path, errno: EIO) }
            done += n
            // Past the buffers written whole; into the one written in part.
            var left = n
            while left > 0 {
                if left >= iov[first].iov_len {
                    left -= iov[first].iov_len
                    first += 1
                } else {
                    iov[first].iov_base += left
                    iov[first].iov_len -= left
                    left = 0
                }
            }
        }
    }

    /// copy_file_range(2) of `count` bytes of `source` at `sourceOffset` to `destination`
    /// at `offset`, continuing after short copies: the kernel moves them from page cache
    /// to page cache (or shares the blocks, on file systems that can), without mapping
    /// or copying them through this process. The error's path names both: `from -> to`.
    /// - Returns: `false`, having copied nothing, when this kernel or pair of file systems
    ///   cannot copy between the two (`ENOSYS`, `EXDEV`, `EINVAL`, `EOPNOTSUPP`): the
    ///   caller writes the bytes itself.
    /// - Throws: ``WStoreError/io(call:path:errno:)``; `EIO` when the source ends first.
    package static func copyFileRange(
        from source: Int32, at sourceOffset: Int, to destination: Int32, at offset: Int, count: Int,
        paths: String
    ) throws(WStoreError) -> Bool {
        guard let fn = CopyFileRange.function else { return false }
        var done = 0
        while done < count {
            var inOffset = Int64(sourceOffset + done), outOffset = Int64(offset + done)
            let n: Int
            do {
                n = try syscall("copy_file_range", paths) {
                    fn(source, &inOffset, destination, &outOffset, count - done, 0)
                }
            } catch let e {
                if done == 0, case let .io(_, _, code) = e, [ENOSYS, EXDEV, EINVAL, EOPNOTSUPP].contains(code) {
                    return false
                }
                throw e
            }
            guard n > 0 else { throw .io(call: "copy_file_range", path: paths, errno: EIO) }
            done += n
        }
        return true
    }

    /// posix_fadvise(2) of `length` bytes at `offset` of `fd` (`0` length: to the end). A
    /// hint: posix_fadvise returns its error rather than setting errno, and a failure
    /// changes nothing but speed, so it is not reported.
    package static func adviseFile(_ fd: Int32, offset: Int, length: Int, _ advice: FileAdvice) {
        _ = posix_fadvise(fd, off_t(offset), off_t(length), advice.rawValue)
    }

    /// What ``adviseFile(_:offset:length:_:)`` tells the kernel about a range of a file.
    package struct FileAdvice: Sendable {
        let rawValue: Int32
        /// `POSIX_FADV_WILLNEED`: start reading the range into the page cache now.
        package static let willNeed = FileAdvice(rawValue: POSIX_FADV_WILLNEED)
        /// `POSIX_FADV_DONTNEED`: drop the range's clean cached pages (pages still mapped stay).
        package static let dontNeed = FileAdvice(rawValue: POSIX_FADV_DONTNEED)
        /// `POSIX_FADV_RANDOM`: no readahead around what is read.
        package static let random = FileAdvice(rawValue: POSIX_FADV_RANDOM)
    }

    /// sync_file_range(2) with `SYNC_FILE_RANGE_WRITE` over the whole of `fd`: starts
    /// writing back its dirty pages without waiting for them. A hint, not reported.
    package static func startWriteback(_ fd: Int32) {
        _ = SyncFileRange.function?(fd, 0, 0, SyncFileRange.write)
    }

    /// open(2) of an existing file for reading and writing.
    package static func openForUpdate(_ path: String) throws(WStoreError) -> Int32 {
        try syscall("open", path) { open(path, O_RDWR | O_CLOEXEC) }
    }

    /// ftruncate(2).
    package static func truncate(_ fd: Int32, to size: Int, path: String) throws(WStoreError) {
        _ = try syscall("ftruncate", path) { ftruncate(fd, off_t(size)) }
    }

    /// mincore(2) of the page at `address`: whether it is in memory. `false` when the
    /// kernel cannot tell (an address outside any mapping).
    package static func pageIsResident(_ address: UnsafeRawPointer) -> Bool {
        let page = UnsafeMutableRawPointer(bitPattern: UInt(bitPattern: address) & ~UInt(pageSize - 1))!
        var resident: UInt8 = 0
        return mincore(page, 1, &resident) == 0 && resident & 1 != 0
    }

    /// The whole file at `path` (open, fstat and pread(2)).
    /// - Throws: ``WStoreError/io(call:path:errno:)``; `EISDIR` for a directory.
    package static func readFile(_ path: String) throws(WStoreError) -> [UInt8] {
        let fd = try openForReading(path)
        defer { close(fd) }
        let status = try fileStatus(fd, path: path)
        guard status.isRegularFile else { throw .io(call: "read", path: path, errno: EISDIR) }
        var out = [UInt8](repeating: 0, count: status.size)
        let read = out.withUnsafeMutableBytes { b in
            Result { () throws(WStoreError) in try pread(fd, into: b, at: 0, path: path) }
        }
        out.removeLast(out.count - (try read.get()))
        return out
    }

    /// Everything `path` gives until its end, read(2) by read (for files such as those of
    /// /proc, whose size says nothing of their length).
    /// - Throws: ``WStoreError/io(call:path:errno:)``.
    package static func readToEnd(_ path: String) throws(WStoreError) -> [UInt8] {
        let fd = try openForReading(path)
        defer { close(fd) }
        var out: [UInt8] = []
        let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 << 10, alignment: 16)
        defer { chunk.deallocate() }
        while true {
            let n = try syscall("read", path) { Glibc.read(fd, chunk.baseAddress!, chunk.count) }
            if n == 0 { return out }
            out.append(contentsOf: UnsafeRawBufferPointer(rebasing: chunk[..<n]))
        }
    }

    /// fsync(2).
    package static func fsync(_ fd: Int32, path: String) throws(WStoreError) {
        _ = try syscall("fsync", path) { Glibc.fsync(fd) }
    }

    /// fsync(2) of directory `path`, so entries created or renamed in it are durable.
    package static func syncDirectory(_ path: String) throws(WStoreError) {
        let fd = try syscall("open", path) { open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        defer { close(fd) }
        try fsync(fd, path: path)
    }

    /// rename(2). The error's path names both: `from -> to`.
    package static func rename(_ from: String, to: String) throws(WStoreError) {
        _ = try syscall("rename", "\(from) -> \(to)") { Glibc.rename(from, to) }
    }

    /// renameat2(2) with `RENAME_EXCHANGE`: swaps `a` and `b` atomically.
    /// - Returns: `false` when this kernel or file system cannot exchange (the caller falls back).
    package static func exchange(_ a: String, _ b: String) throws(WStoreError) -> Bool {
        guard let fn = Renameat2.function else { return false }
        do {
            _ = try syscall("renameat2", "\(a) <-> \(b)") { fn(AT_FDCWD, a, AT_FDCWD, b, Renameat2.exchange) }
            return true
        } catch let e {
            if case let .io(_, _, code) = e, code == ENOSYS || code == EINVAL || code == ENOTSUP { return false }
            throw e
        }
    }

    /// Writes a file at `path` atomically: `body` hands its bytes to `put`, which writes them
    /// to a temporary file beside `path`; that file is fsynced and renamed over `path` only
    /// when `body` returns. On any failure the temporary file is removed and whatever was
    /// at `path` is left as it was.
    /// - Throws: ``WStoreError/io(call:path:errno:)``, or whatever `body` throws.
    package static func writeAtomically(
        to path: String,
        _ body: (_ put: (UnsafeRawBufferPointer) throws -> Void) throws -> Void
    ) throws {
        let tmp = path + ".wstore-partial-\(processID)"
        let fd = try create(tmp)
        var ok = false
        defer {
            close(fd)
            if !ok { try? unlink(tmp) }
        }
        try body { bytes in try write(fd, bytes, path: tmp) }
        try fsync(fd, path: tmp)
        try rename(tmp, to: path)
        ok = true
    }

    /// unlink(2).
    package static func unlink(_ path: String) throws(WStoreError) {
        _ = try syscall("unlink", path) { Glibc.unlink(path) }
    }

    /// unlink(2) of a file that may already be gone (`ENOENT` is not an error).
    package static func unlinkIfPresent(_ path: String) throws(WStoreError) {
        do { try unlink(path) } catch let e {
            if case let .io(_, _, code) = e, code == ENOENT { return }
            throw e
        }
    }

    /// flock(2) of `fd`: shared or exclusive, waiting for it unless `wait` is false.
    /// - Returns: `false` when `wait` is false and another open file description holds a
    ///   conflicting lock (`EWOULDBLOCK`).
    /// - Throws: ``WStoreError/io(call:path:errno:)`` for any other failure.
    package static func lock(_ fd: Int32, exclusive: Bool, wait: Bool = true, path: String) throws(WStoreError) -> Bool
    {
        let op = (exclusive ? LOCK_EX : LOCK_SH) | (wait ? 0 : LOCK_NB)
        do {
            _ = try syscall("flock", path) { flock(fd, op) }
            return true
        } catch let e {
            if case let .io(_, _, code) = e, code == EWOULDBLOCK, !wait { return false }
            throw e
        }
    }

    /// The device and inode of the file open as `fd` (fstat(2)), or `nil` when it fails.
    package static func fileIdentity(_ fd: Int32) -> (device: UInt64, inode: UInt64)? {
        var st = stat()
        guard fstat(fd, &st) == 0 else { return nil }
        return (UInt64(st.st_dev), UInt64(st.st_ino))
    }

    /// This boot of the system, as the kernel names it (`/proc/sys/kernel/random/boot_id`,
    /// a random UUID made at each boot), or `nil` where there is none.
    package static let bootID: String? = {
        guard let bytes = try? readToEnd("/proc/sys/kernel/random/boot_id") else { return nil }
        let id = String(decoding: bytes.filter { $0 > 0x20 }, as: UTF8.self)
        return id.isEmpty ? nil : id
    }()

    /// mkdir(2) of `path` and of every missing parent; a directory already there is fine.
    package static func makeDirectories(_ path: String, mode: mode_t = 0o755) throws(WStoreError) {
        if isDirectory(path) { return }
        var parent = path
        while parent.hasSuffix("/") && parent.count > 1 { parent.removeLast() }
        if let slash = parent.lastIndex(of: "/"), slash != parent.startIndex {
            try makeDirectories(String(parent[..<slash]), mode: mode)
        }
        do {
            _ = try syscall("mkdir", path) { mkdir(path, mode) }
        } catch let e {
            if case let .io(_, _, code) = e, code == EEXIST, isDirectory(path) { return }
            throw e
        }
    }

    /// Whether `path` is a directory (stat(2), following links).
    package static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    /// The device and inode of `path` (stat(2)), or `nil` when it cannot be read.
    package static func fileIdentity(_ path: String) -> (device: UInt64, inode: UInt64)? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return (UInt64(st.st_dev), UInt64(st.st_ino))
    }

    /// The size of the file open as `fd`, and whether it is a regular file (fstat(2)).
    package static func fileStatus(_ fd: Int32, path: String) throws(WStoreError) -> (size: Int, isRegularFile: Bool) {
        var st = stat()
        _ = try syscall("fstat", path) { fstat(fd, &st) }
        return (Int(st.st_size), (st.st_mode & S_IFMT) == S_IFREG)
    }

    /// posix_fadvise(2) `POSIX_FADV_DONTNEED`: the kernel drops the file's clean cached
    /// pages (those still mapped are kept). A hint. posix_fadvise returns its error rather
    /// than setting errno.
    @discardableResult
    package static func dropCachedPages(_ fd: Int32) -> Bool {
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) == 0
    }

    // MARK: Memory maps

    /// The system page size.
    package static let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))

    /// mmap(2) of the first `size` bytes of `fd`, read-only and private. The mapping stays
    /// valid after the descriptor is closed.
    package static func mapReadOnly(_ fd: Int32, size: Int, path: String) throws(WStoreError) -> UnsafeRawPointer {
        if faultCount.load(ordering: .relaxed) > 0, let e = injectedFault("mmap", path) {
            throw .io(call: "mmap", path: path, errno: e)
        }
        guard let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), p != MAP_FAILED else {
            throw .io(call: "mmap", path: path, errno: errno)
        }
        return UnsafeRawPointer(p)
    }

    /// A private anonymous mmap(2) holding a copy of `bytes` (not empty), made read-only:
    /// what ``mapReadOnly(_:size:path:)`` gives for a file, for bytes that are in none.
    /// Unmap it with ``unmap(_:size:)``. Running out of address space here is fatal.
    package static func mapCopy(of bytes: UnsafeRawBufferPointer) -> UnsafeRawPointer {
        guard let p = mmap(nil, bytes.count, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
            p != MAP_FAILED
        else {
            fatalError("mmap of \(bytes.count) anonymous bytes failed: \(message(errno: errno))")
        }
        p.copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
        _ = mprotect(p, bytes.count, PROT_READ)
        return UnsafeRawPointer(p)
    }

    /// munmap(2) of a mapping made by ``mapReadOnly(_:size:path:)`` or ``mapCopy(of:)``.
    package static func unmap(_ base: UnsafeRawPointer, size: Int) {
        _ = munmap(UnsafeMutableRawPointer(mutating: base), size)
    }

    /// madvise(2) `MADV_WILLNEED` over the pages under `range`: read them ahead. A hint.
    package static func adviseWillNeed(_ range: UnsafeRawBufferPointer) { advise(range, MADV_WILLNEED) }

    /// madvise(2) `MADV_DONTNEED` over the pages under `range` of a read-only shared
    /// mapping: this process's page-table entries go, and the next access faults the page in
    /// again, from the page cache or, once dropped there too, from disk. A hint.
    package static func adviseDontNeed(_ range: UnsafeRawBufferPointer) { advise(range, MADV_DONTNEED) }

    private static func advise(_ range: UnsafeRawBufferPointer, _ advice: Int32) {
        guard let base = range.baseAddress, range.count > 0 else { return }
        let start = UInt(bitPattern: base) & ~UInt(pageSize - 1)
        let end = UInt(bitPattern: base) + UInt(range.count)
        _ = madvise(UnsafeMutableRawPointer(bitPattern: start), Int(end - start), advice)
    }

    // MARK: Processes and the terminal

    /// This process's id.
    package static var processID: Int32 { getpid() }

    /// Whether process `pid` is gone (kill(2) with signal 0 answers `ESRCH`).
    package static func processIsGone(_ pid: Int32) -> Bool { kill(pid, 0) == -1 && errno == ESRCH }

    /// Processors online (sysconf `_SC_NPROCESSORS_ONLN`), at least 1.
    package static var processorCount: Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }

    /// Whether standard error is a terminal (isatty(3)).
    package static var standardErrorIsTerminal: Bool { isatty(STDERR_FILENO) == 1 }

    /// CPU seconds this process has used, every thread counted (`CLOCK_PROCESS_CPUTIME_ID`).
    package static func processCPUSeconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
    }

    /// Whether `name` matches the shell glob `pattern` (fnmatch(3), no flags).
    package static func matches(_ name: String, glob pattern: String) -> Bool { fnmatch(pattern, name, 0) == 0 }
}

/// copy_file_range(2), looked up at run time (glibc declares it only under _GNU_SOURCE).
private enum CopyFileRange {
    typealias Fn =
        @convention(c) (Int32, UnsafeMutablePointer<Int64>?, Int32, UnsafeMutablePointer<Int64>?, Int, UInt32)
        -> Int
    static let function: Fn? = {
        guard let sym = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "copy_file_range") else { return nil }
        return unsafeBitCast(sym, to: Fn.self)
    }()
}

/// sync_file_range(2), looked up at run time (glibc declares it only under _GNU_SOURCE).
private enum SyncFileRange {
    typealias Fn = @convention(c) (Int32, off_t, off_t, UInt32) -> Int32
    static let write: UInt32 = 2  // SYNC_FILE_RANGE_WRITE, fcntl.h
    static let function: Fn? = {
        guard let sym = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "sync_file_range") else { return nil }
        return unsafeBitCast(sym, to: Fn.self)
    }()
}

/// renameat2(2), looked up at run time (glibc declares it only under _GNU_SOURCE).
private enum Renameat2 {
    typealias Fn = @convention(c) (Int32, UnsafePointer<CChar>?, Int32, UnsafePointer<CChar>?, UInt32) -> Int32
    static let exchange: UInt32 = 1 << 1  // RENAME_EXCHANGE, linux/fs.h
    static let function: Fn? = {
        guard let sym = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "renameat2") else { return nil }
        return unsafeBitCast(sym, to: Fn.self)
    }()
}

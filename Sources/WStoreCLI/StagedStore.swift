import Foundation
import WeightStore
#if canImport(Glibc)
import Glibc
#endif

/// A store built in a temporary directory beside its target and moved into place
/// only when complete, so a failure, Ctrl-C or kill never leaves a partial store at
/// the target, nor disturbs a store already there.
///
/// The temporary directory is `.<name>.wstore-pack-<pid>` next to the target. SIGINT
/// and SIGTERM remove it before the process exits; after a SIGKILL it stays, and the
/// next staging for the same target removes it once its process is gone.
struct StagedStore {
    let target: String
    let staging: String

    /// Checks the target can be replaced, removes stale staging directories of dead
    /// processes, and names a fresh staging directory (not created yet).
    /// - Throws: a one-line error when the target exists and is neither a store nor an empty folder.
    init(target: String) throws {
        let fm = FileManager.default
        let url = URL(fileURLWithPath: target).standardizedFileURL
        let parent = url.deletingLastPathComponent().path
        let name = url.lastPathComponent
        var isDir: ObjCBool = false
        if fm.fileExists(atPath: target, isDirectory: &isDir) {
            let isStore = isDir.boolValue && fm.fileExists(atPath: target + "/data.mdb")
            let isEmpty = isDir.boolValue && ((try? fm.contentsOfDirectory(atPath: target))?.isEmpty ?? false)
            guard isStore || isEmpty else {
                throw WStoreError.invalidArgument("\(target) exists and is not a wstore store; refusing to replace it")
            }
        }
        guard fm.fileExists(atPath: parent, isDirectory: &isDir), isDir.boolValue else {
            throw WStoreError.invalidArgument("\(parent): no such directory to create \(name) in")
        }
        let prefix = ".\(name).wstore-pack-"
        for entry in (try? fm.contentsOfDirectory(atPath: parent)) ?? [] where entry.hasPrefix(prefix) {
            if let pid = Int32(entry.dropFirst(prefix.count).prefix { $0.isNumber }), kill(pid, 0) == -1, errno == ESRCH {
                try? fm.removeItem(atPath: parent + "/" + entry)
            }
        }
        self.target = url.path
        staging = parent + "/" + prefix + "\(getpid())"
    }

    /// Arms SIGINT/SIGTERM to remove the staging directory and exit (130 / 143).
    func armSignals() {
        StagingCleanup.arm(staging)
    }

    /// Disarms the signal handlers (back to the actions before).
    func disarmSignals() { StagingCleanup.disarm() }

    /// Removes the staging directory (after a failure).
    func discard() { try? FileManager.default.removeItem(atPath: staging) }

    /// Moves the finished store into place: an atomic exchange with an existing target
    /// (renameat2 RENAME_EXCHANGE), then the old store is deleted. Call after the store
    /// in the staging directory has been synced and closed.
    func commit() throws {
        let fm = FileManager.default
        syncDirectory(staging) // the store's file entries reach the disk before it is moved into place
        if fm.fileExists(atPath: target) {
            if let exchange = Renameat2.function, exchange(AT_FDCWD, staging, AT_FDCWD, target, Renameat2.exchange) == 0 {
                // The old store is now at `staging`.
            } else {
                // No RENAME_EXCHANGE here (old kernel or file system): move the old one aside first.
                let aside = staging + ".old"
                guard rename(target, aside) == 0 else { throw posixError("cannot move \(target) aside") }
                guard rename(staging, target) == 0 else {
                    _ = rename(aside, target)
                    throw posixError("cannot move the new store to \(target)")
                }
                guard rename(aside, staging) == 0 else { throw posixError("cannot remove the old store at \(aside)") }
            }
            try? fm.removeItem(atPath: staging)
        } else {
            guard rename(staging, target) == 0 else { throw posixError("cannot move the new store to \(target)") }
        }
        syncDirectory(URL(fileURLWithPath: target).deletingLastPathComponent().path)
    }

    /// fsync(2) of a directory, so entries created or renamed in it are durable; best effort.
    private func syncDirectory(_ path: String) {
        let dir = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard dir >= 0 else { return }
        _ = fsync(dir)
        close(dir)
    }

    private func posixError(_ what: String) -> WStoreError {
        WStoreError.invalidArgument("\(what): \(String(cString: strerror(errno)))")
    }
}

/// renameat2(2), looked up at run time (glibc declares it only under _GNU_SOURCE).
private enum Renameat2 {
    typealias Fn = @convention(c) (Int32, UnsafePointer<CChar>?, Int32, UnsafePointer<CChar>?, UInt32) -> Int32
    static let exchange: UInt32 = 1 << 1 // RENAME_EXCHANGE, linux/fs.h
    static let function: Fn? = {
        guard let sym = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "renameat2") else { return nil }
        return unsafeBitCast(sym, to: Fn.self)
    }()
}

/// What the signal handler removes: C strings set up before it is armed, so the
/// handler calls only async-signal-safe functions (unlink, rmdir, _exit).
private enum StagingCleanup {
    nonisolated(unsafe) static var paths = UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>.allocate(capacity: 3)
    /// The SIGINT and SIGTERM actions replaced while armed.
    nonisolated(unsafe) static var previous = UnsafeMutablePointer<sigaction>.allocate(capacity: 2)

    static func arm(_ dir: String) {
        for (i, p) in [dir + "/data.mdb", dir + "/lock.mdb", dir].enumerated() { paths[i] = strdup(p) }
        var sa = sigaction()
        sa.__sigaction_handler.sa_handler = { sig in
            for i in 0 ..< 2 { if let p = StagingCleanup.paths[i] { unlink(p) } }
            if let p = StagingCleanup.paths[2] { rmdir(p) }
            _exit(128 + sig)
        }
        sigemptyset(&sa.sa_mask)
        sigaction(SIGINT, &sa, previous)
        sigaction(SIGTERM, &sa, previous + 1)
    }

    /// Restores the actions that were in place before ``arm(_:)``.
    static func disarm() {
        sigaction(SIGINT, previous, nil)
        sigaction(SIGTERM, previous + 1, nil)
        for i in 0 ..< 3 {
            free(paths[i])
            paths[i] = nil
        }
    }
}

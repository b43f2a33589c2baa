import Glibc
import Synchronization

extension Posix {
    /// Files and a directory that SIGINT and SIGTERM remove before the process exits
    /// (128 + the signal), for work that must leave nothing behind when interrupted.
    ///
    /// The paths are C strings set up before the handler is armed, so the handler calls
    /// only async-signal-safe functions (unlink, rmdir, _exit). One set is armed at a time.
    package enum SignalCleanup {
        nonisolated(unsafe) private static var paths = UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>.allocate(
            capacity: 3)
        /// The SIGINT and SIGTERM actions replaced while armed.
        nonisolated(unsafe) private static var previous = UnsafeMutablePointer<sigaction>.allocate(capacity: 2)
        /// Serializes arm and disarm: packs run concurrently in one process (tests) must not
        /// free the same paths twice.
        private static let lock = Mutex(())

        /// On SIGINT or SIGTERM: unlink `files` (at most two), rmdir `directory`, exit.
        package static func arm(files: [String], directory: String) {
            precondition(files.count <= 2)
            lock.withLock { _ in armLocked(files: files, directory: directory) }
        }

        private static func armLocked(files: [String], directory: String) {
            for i in 0 ..< 3 { paths[i] = nil }
            for (i, p) in files.enumerated() { paths[i] = strdup(p) }
            paths[2] = strdup(directory)
            var sa = sigaction()
            sa.__sigaction_handler.sa_handler = { sig in
                for i in 0 ..< 2 { if let p = SignalCleanup.paths[i] { Glibc.unlink(p) } }
                if let p = SignalCleanup.paths[2] { rmdir(p) }
                _exit(128 + sig)
            }
            sigemptyset(&sa.sa_mask)
            sigaction(SIGINT, &sa, previous)
            sigaction(SIGTERM, &sa, previous + 1)
        }

        /// Restores the actions that were in place before ``arm(files:directory:)``.
        package static func disarm() {
            lock.withLock { _ in disarmLocked() }
        }

        private static func disarmLocked() {
            sigaction(SIGINT, previous, nil)
            sigaction(SIGTERM, previous + 1, nil)
            for i in 0 ..< 3 {
                free(paths[i])
                paths[i] = nil
            }
        }
    }
}

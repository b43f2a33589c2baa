import Foundation
import WStoreCore
import WeightStore

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
            if let pid = Int32(entry.dropFirst(prefix.count).prefix { $0.isNumber }), Posix.processIsGone(pid) {
                try? fm.removeItem(atPath: parent + "/" + entry)
            }
        }
        self.target = url.path
        staging = parent + "/" + prefix + "\(Posix.processID)"
    }

    /// Arms SIGINT/SIGTERM to remove the staging directory and exit (130 / 143).
    func armSignals() {
        Posix.SignalCleanup.arm(files: [staging + "/data.mdb", staging + "/lock.mdb"], directory: staging)
    }

    /// Disarms the signal handlers (back to the actions before).
    func disarmSignals() { Posix.SignalCleanup.disarm() }

    /// Removes the staging directory (after a failure).
    func discard() { try? FileManager.default.removeItem(atPath: staging) }

    /// Moves the finished store into place: an atomic exchange with an existing target
    /// (renameat2 RENAME_EXCHANGE), then the old store is deleted. Call after the store
    /// in the staging directory has been synced and closed.
    /// - Throws: ``WStoreError/io(call:path:errno:)`` when a rename fails; the target is
    ///   then as it was.
    func commit() throws {
        let fm = FileManager.default
        try? Posix.syncDirectory(staging)  // the store's file entries reach the disk before it is moved into place; best effort
        if fm.fileExists(atPath: target) {
            if try Posix.exchange(staging, target) {
                // The old store is now at `staging`.
            } else {
                // No RENAME_EXCHANGE here (old kernel or file system): move the old one aside first.
                let aside = staging + ".old"
                try Posix.rename(target, to: aside)
                do {
                    try Posix.rename(staging, to: target)
                } catch {
                    try? Posix.rename(aside, to: target)
                    throw error
                }
                try Posix.rename(aside, to: staging)
            }
            try? fm.removeItem(atPath: staging)
        } else {
            try Posix.rename(staging, to: target)
        }
        try? Posix.syncDirectory(URL(fileURLWithPath: target).deletingLastPathComponent().path)  // best effort
    }
}

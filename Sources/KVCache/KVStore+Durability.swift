import Foundation
import Synchronization
import WStoreCore

extension KVStore {
    /// When a handle's writes reach the disk (format-spec/KV.md §9).
    public enum Durability: String, Sendable, CaseIterable {
        /// Every write (a store, a flush of use stamps, chunks kept from the remote tier)
        /// commits with a sync: once it returns it survives a system crash or power loss.
        /// The default.
        case synced
        /// Writes commit without a sync, so a store costs its encode and a copy into the
        /// page cache, not the disk's write rate. A process crash loses nothing committed
        /// (the pages are in the system's page cache). A system crash or power loss may
        /// leave the store's pages torn, so the store is emptied at its next writable open
        /// after a reboot, and a read-only open refuses it until then. ``sync()`` makes
        /// what was committed durable; the last deferred handle of a process to go syncs.
        case deferred
    }

    /// How this handle's writes reach the disk (``setDurability(_:)``).
    public var durability: Durability { deferral.withLock { $0 == nil } ? .synced : .deferred }

    /// Chooses how this handle's writes reach the disk from now on. Going `.deferred` first
    /// records, in a marker file beside the data file (KV.md §9, synced before any
    /// deferred commit), that this boot of the system may leave unsynced commits in the
    /// store. Going back to `.synced` syncs everything committed so far.
    /// - Throws: ``WStoreError/invalidArgument(_:)`` for `.deferred` on a read-only handle,
    ///   ``WStoreError/io(call:path:errno:)`` when the marker cannot be written, ``LMDBError``
    ///   when the sync fails.
    public func setDurability(_ durability: Durability) throws {
        switch durability {
        case .deferred:
            guard !readOnly else { throw WStoreError.invalidArgument("\(path) is open read-only") }
            let settings = KVSettings(options, version: options.codec == .raw ? 3 : 2)
            try deferral.withLock { lease in
                if lease == nil { lease = try DeferredCommits.lease(directory: path, env: env, settings: settings) }
            }
        case .synced:
            let lease = deferral.withLock { l in
                let held = l
                l = nil
                return held
            }
            if lease != nil { try env.sync(force: true) }
        }
    }

    /// Makes every commit so far durable (lmdb.h `mdb_env_sync`, forced). Only deferred
    /// writes need it: a synced write is durable when it returns.
    /// - Throws: ``LMDBError`` when the sync fails.
    public func sync() throws {
        guard !readOnly else { return }
        try env.sync(force: true)
    }

    /// Runs `body` in a write transaction that commits synced unless this handle defers
    /// its commits; a deferred handle's marker is held until the commit has ended.
    func write<R>(_ body: (borrowing WriteTransaction) throws -> R) throws -> R {
        let lease = deferral.withLock { $0 }
        return try withExtendedLifetime(lease) { try env.write(sync: lease == nil, body) }
    }
}

/// The marker of a store with deferred commits (format-spec/KV.md §9): the file
/// `deferred-commits` beside `data.mdb`, naming the boot of the system whose page cache
/// holds unsynced commits, and the store's settings, so that a store torn by a system crash
/// can be emptied and made again at its next open.
///
/// One object per data file per process, shared by the process's deferred handles
/// (``lease(directory:env:settings:)``). It holds a shared flock(2) on the marker; the last
/// handle to let go syncs the store and, when no other process holds the marker, removes it.
final class DeferredCommits: @unchecked Sendable {
    static let fileName = "deferred-commits"
    static let formatName = "wstore-kv-deferred-commits"

    /// The marker's bytes: compact JSON, keys sorted.
    struct Marker: Codable, Equatable {
        var format: String
        /// `/proc/sys/kernel/random/boot_id` of the boot that wrote it; empty where there is none.
        var boot_id: String
        var settings: KVSettings

        func encoded() throws -> [UInt8] { try sortedJSON(self) }

        static func decode(_ bytes: [UInt8]) -> Marker? {
            guard let m = try? JSONDecoder().decode(Marker.self, from: Data(bytes)), m.format == formatName else {
                return nil
            }
            return m
        }
    }

    let markerPath: String
    let directory: String
    let env: LMDBEnvironment
    private let fd: Int32

    private static let registry = Mutex<[String: WeakLease]>([:])

    private struct WeakLease {
        weak var value: DeferredCommits?
    }

    /// The marker of the store in `directory` for this process: the live one, or a new one
    /// written (and synced, with its directory entry) and locked shared.
    static func lease(directory: String, env: LMDBEnvironment, settings: KVSettings) throws -> DeferredCommits {
        let key = Posix.fileIdentity(directory + "/data.mdb").map { "\($0.device):\($0.inode)" } ?? directory
        return try registry.withLock { leases in
            if let live = leases[key]?.value { return live }
            let marker = directory + "/" + fileName
            let bytes = try Marker(format: formatName, boot_id: Posix.bootID ?? "", settings: settings).encoded()
            let fd = try lockedMarker(marker, directory: directory, bytes: bytes)
            let lease = DeferredCommits(markerPath: marker, directory: directory, env: env, fd: fd)
            leases = leases.filter { $0.value.value != nil }
            leases[key] = WeakLease(value: lease)
            return lease
        }
    }

    private init(markerPath: String, directory: String, env: LMDBEnvironment, fd: Int32) {
        self.markerPath = markerPath
        self.directory = directory
        self.env = env
        self.fd = fd
    }

    /// Writes `bytes` as the marker unless it holds them already, then opens and locks it
    /// shared; retried when another process replaced or removed it in between.
    private static func lockedMarker(_ marker: String, directory: String, bytes: [UInt8]) throws -> Int32 {
        for _ in 0 ..< 16 {
            if (try? Posix.readFile(marker)) != bytes {
                try Posix.writeAtomically(to: marker) { put in try bytes.withUnsafeBytes { try put($0) } }
                try Posix.syncDirectory(directory)
            }
            let fd = try Posix.openForReading(marker)
            _ = try Posix.lock(fd, exclusive: false, path: marker)
            if sameFile(fd, marker), (try? Posix.readFile(marker)) == bytes { return fd }
            Posix.close(fd)
        }
        throw WStoreError.invalidArgument("\(marker) kept changing under this process; try again")
    }

    static func sameFile(_ fd: Int32, _ path: String) -> Bool {
        guard let a = Posix.fileIdentity(fd), let b = Posix.fileIdentity(path) else { return false }
        return a == b
    }

    deinit {
        // What was deferred reaches the disk before the marker that covers it goes; when
        // the sync fails the marker stays, and a reboot empties the store instead.
        if (try? env.sync(force: true)) != nil, Self.removeIfUnheld(fd: fd, marker: markerPath) {
            try? Posix.syncDirectory(directory)
        }
        Posix.close(fd)
    }

    /// Removes the marker open as `fd` when no other open file description holds it
    /// (an exclusive flock(2) without waiting) and it is still the file at `marker`.
    private static func removeIfUnheld(fd: Int32, marker: String) -> Bool {
        guard (try? Posix.lock(fd, exclusive: true, wait: false, path: marker)) == true, sameFile(fd, marker) else {
            return false
        }
        return (try? Posix.unlink(marker)) != nil
    }

    /// What a store's marker says at open, before its environment opens.
    enum State {
        /// No marker: every commit was synced.
        case none
        /// Commits of this boot may be unsynced: in the page cache, intact.
        case thisBoot
        /// Commits of another boot may have been lost or torn: the store must be emptied.
        case otherBoot(Marker)
    }

    /// Reads the marker of the store in `directory`.
    /// - Throws: ``WStoreError/damagedFile(path:reason:)`` for a marker that is not one,
    ///   ``WStoreError/io(call:path:errno:)`` when it cannot be read.
    static func state(directory: String) throws -> State {
        let marker = directory + "/" + fileName
        guard access(marker, F_OK) == 0 else { return .none }
        guard let m = Marker.decode(try Posix.readFile(marker)) else {
            throw WStoreError.damagedFile(path: marker, reason: "not a wstore deferred-commits marker")
        }
        if let boot = Posix.bootID, m.boot_id == boot { return .thisBoot }
        // Without a boot id to compare, only a live holder shows the commits are of this boot.
        if Posix.bootID == nil, let fd = try? Posix.openForReading(marker) {
            defer { Posix.close(fd) }
            if (try? Posix.lock(fd, exclusive: true, wait: false, path: marker)) == false { return .thisBoot }
        }
        return .otherBoot(m)
    }

    /// Empties the store in `directory` whose marker names another boot: its data and lock
    /// files are removed and a store with the marker's settings is made in their place;
    /// the marker goes last, so a crash on the way leaves it to do again. Serialized with
    /// other processes by an exclusive flock(2) on the marker.
    /// - Returns: `false` when another process had already done it.
    static func empty(directory: String) throws -> Bool {
        let marker = directory + "/" + fileName
        guard let fd = try? Posix.openForReading(marker) else { return false }
        defer { Posix.close(fd) }
        _ = try Posix.lock(fd, exclusive: true, path: marker)
        guard sameFile(fd, marker), let m = Marker.decode(try Posix.readFile(marker)) else { return false }
        if let boot = Posix.bootID, m.boot_id == boot { return false }
        guard var options = KVStore.Options(settings: m.settings) else {
            throw WStoreError.damagedFile(path: marker, reason: "its store settings are incomplete")
        }
        options.threads = 1
        try Posix.unlinkIfPresent(directory + "/data.mdb")
        try Posix.unlinkIfPresent(directory + "/lock.mdb")
        try Posix.syncDirectory(directory)
        // create() removes the marker once the new store's settings are committed.
        _ = try KVStore.create(at: directory, options: options)
        return true
    }

    /// At a writable open of a store whose marker names this boot: when no process holds
    /// the marker (its deferred writer ended without letting go), syncs the store and
    /// removes the marker, so a later reboot does not empty a store that is whole.
    static func settleAbandoned(directory: String, env: LMDBEnvironment) throws {
        let marker = directory + "/" + fileName
        guard let fd = try? Posix.openForReading(marker) else { return }
        defer { Posix.close(fd) }
        guard (try? Posix.lock(fd, exclusive: true, wait: false, path: marker)) == true, sameFile(fd, marker) else {
            return
        }
        try env.sync(force: true)
        try Posix.unlink(marker)
        try Posix.syncDirectory(directory)
    }

    /// Removes a marker left in `directory` by a store that is no longer there (called by
    /// ``KVStore/create(at:options:remote:durability:)`` once the new store is committed).
    static func removeLeftover(directory: String) throws {
        let marker = directory + "/" + fileName
        guard access(marker, F_OK) == 0 else { return }
        try Posix.unlinkIfPresent(marker)
        try Posix.syncDirectory(directory)
    }
}

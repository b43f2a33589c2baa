import CLMDB
import Glibc
import Synchronization

/// An LMDB environment: one memory map, its named sub-databases, and the
/// transactions that read and write them.
///
/// - Reads lend bytes from inside the map for the duration of a closure
///   (``withRead(_:)``); pointers never escape it.
/// - The map grows by itself: a write that hits `MDB_MAP_FULL` is rolled back, the
///   map is doubled, and the write closure runs again.
/// - The environment is opened with `MDB_NOTLS`, so read transactions are not tied
///   to threads and many threads and tasks may read at once.
///
/// `@unchecked Sendable`: lmdb.h documents an `MDB_env` as usable from many threads;
/// the map-size change, which lmdb.h requires to happen with no transaction active in
/// this process, is serialized against every transaction by `gate`.
package final class LMDBEnvironment: @unchecked Sendable {
    package struct Options: Sendable {
        /// Map size at open; it doubles whenever a write needs more.
        package var initialMapSize: Int = 256 << 20
        package var maxDatabases: Int = 16
        package var maxReaders: Int = 1024
        /// `MDB_NOSYNC`: commits do not fsync; call ``sync(force:)`` before relying on the data.
        package var noSync: Bool = false
        /// `MDB_WRITEMAP` (write environments only): a write transaction's pages are the
        /// map's own pages, so `MDB_RESERVE` hands out memory in the file's page cache and
        /// a commit copies nothing. lmdb.h: LMDB then ftruncates the file to the map size
        /// (sparse until written; see ``usedBytes`` to trim it), and "do not mix processes
        /// with and without MDB_WRITEMAP on the same environment".
        package var writeMap: Bool = false
        /// `MDB_MAPASYNC` with ``writeMap``: commits start an asynchronous flush instead of
        /// waiting; as with ``noSync``, call ``sync(force:)`` before relying on the data.
        package var mapAsync: Bool = false
        /// `MDB_NORDAHEAD`: LMDB advises the whole map `MADV_RANDOM`, so a fault reads one
        /// page, not the disk's readahead window (8 MiB here) around it. Large records are
        /// then read through ``DataFile`` or advised range by range.
        package var noReadahead: Bool = false
        package init() {}
    }

    package let path: String
    package let readOnly: Bool
    /// Whether write transactions write straight into the map (``Options/writeMap``).
    package let writeMap: Bool
    /// Whether the environment was opened with `MDB_NOSYNC` (``Options/noSync``).
    private let openedNoSync: Bool
    /// Whether `MDB_NOSYNC` is set on the environment now. Changed, and read, only by the
    /// thread holding LMDB's write lock (inside a write transaction).
    private var noSyncNow: Bool
    let env: OpaquePointer
    /// Shared by every transaction; exclusive while the map size changes.
    private let gate: RWLock
    /// Read transactions that were reset and can be renewed (mdb_txn_renew) cheaply.
    private let idleReaders = Mutex<[UncheckedSendable<OpaquePointer>]>([])
    private let databases = Mutex<[String: MDB_dbi]>([:])
    /// Where the map starts, once found (``mapOffset(of:)``); 0 until then.
    let mapStart = Atomic<Int>(0)

    /// Opens (or, when not read-only, creates) the environment in directory `path`.
    /// Stores open through ``shared(path:readOnly:options:)``, which keeps one
    /// environment per data file per process, as lmdb.h requires.
    ///
    /// - Throws: ``LMDBError`` when LMDB refuses the directory (missing, not an LMDB
    ///   environment, permissions).
    package init(path: String, readOnly: Bool, options: Options = Options()) throws {
        var e: OpaquePointer?
        try LMDBError.check(mdb_env_create(&e), "mdb_env_create", path: path)
        guard let e else { preconditionFailure("mdb_env_create returned no environment") }
        self.env = e
        self.path = path
        self.readOnly = readOnly
        self.writeMap = options.writeMap && !readOnly
        self.openedNoSync = options.noSync
        self.noSyncNow = options.noSync
        self.gate = RWLock()
        // Every stored property is set, so a throw below runs deinit, which closes `e`.
        try LMDBError.check(mdb_env_set_maxdbs(e, MDB_dbi(options.maxDatabases)), "mdb_env_set_maxdbs", path: path)
        try LMDBError.check(mdb_env_set_maxreaders(e, UInt32(options.maxReaders)), "mdb_env_set_maxreaders", path: path)
        if !readOnly {
            try LMDBError.check(mdb_env_set_mapsize(e, options.initialMapSize), "mdb_env_set_mapsize", path: path)
        }
        var flags = UInt32(MDB_NOTLS)
        if readOnly { flags |= UInt32(MDB_RDONLY) }
        // lmdb.h, MDB_NOLOCK: "the caller must ensure that no readers are using old
        // transactions while a writer is active". A reader that cannot write lock.mdb
        // (a store it may read but not write) opens without the lock file; it then does
        // not hold back a writer's page reuse, which a store nobody may write cannot have.
        if readOnly && !Self.lockFileWritable(path) { flags |= UInt32(MDB_NOLOCK) }
        if options.noSync { flags |= UInt32(MDB_NOSYNC) }
        if options.writeMap && !readOnly { flags |= UInt32(MDB_WRITEMAP) }
        if options.mapAsync && options.writeMap && !readOnly { flags |= UInt32(MDB_MAPASYNC) }
        if options.noReadahead { flags |= UInt32(MDB_NORDAHEAD) }
        try LMDBError.check(mdb_env_open(e, path, flags, 0o644), "mdb_env_open", path: path)
        if options.noReadahead {
            // Reads of large records through the data file ask for their exact range;
            // a pread that misses then reads what it asked for, no readahead past it.
            var fd: mdb_filehandle_t = -1
            if mdb_env_get_fd(e, &fd) == 0 { Posix.adviseFile(fd, offset: 0, length: 0, .random) }
        }
    }

    /// Whether this process may write (or create) `lock.mdb` in `path`.
    static func lockFileWritable(_ path: String) -> Bool {
        let lock = path + "/lock.mdb"
        if access(lock, F_OK) == 0 { return access(lock, W_OK) == 0 }
        return access(path, W_OK) == 0
    }

    /// Walks the B-tree pages of the snapshot a read transaction pins (so no writer
    /// reuses them meanwhile) with ``LMDBFile/walk(path:meta:)``.
    /// - Throws: ``WStoreError/damagedFile(path:reason:)`` when the meta pages are unreadable, ``LMDBError``.
    package func checkPages() throws -> LMDBFile.Report {
        for _ in 0 ..< 8 {
            let report: LMDBFile.Report? = try withRead { txn in
                let meta = try LMDBFile.readMeta(path: dataFilePath)
                // lmdb.h mdb_txn_id: the snapshot this read transaction sees.
                guard meta.txnID == UInt64(truncatingIfNeeded: mdb_txn_id(txn.txn)) else { return nil }
                return try LMDBFile.walk(path: dataFilePath, meta: meta)
            }
            if let report { return report }
        }
        throw WStoreError.invalidArgument(
            "\(path): the store changed under every attempt to check its pages; try again")
    }

    deinit {
        let idle = idleReaders.withLock { r in
            let all = r
            r.removeAll()
            return all
        }
        for txn in idle { mdb_txn_abort(txn.value) }
        mdb_env_close(env)
    }

    /// The page size of the map (lmdb.h `mdb_env_stat`, `ms_psize`).
    package var pageSize: Int {
        var st = MDB_stat()
        mdb_env_stat(env, &st)
        return Int(st.ms_psize)
    }

    /// The current map size in bytes (lmdb.h `mdb_env_info`, `me_mapsize`).
    package var mapSize: Int {
        var info = MDB_envinfo()
        mdb_env_info(env, &info)
        return info.me_mapsize
    }

    /// Bytes of the data file in use: every page up to the last one a committed
    /// transaction wrote (lmdb.h `mdb_env_info`, `(me_last_pgno + 1) * psize`). A
    /// `MDB_WRITEMAP` environment's file is as long as its map; the rest is a hole.
    package var usedBytes: Int {
        var info = MDB_envinfo()
        mdb_env_info(env, &info)
        return (info.me_last_pgno + 1) * pageSize
    }

    /// The page size on the environment's file, the largest key LMDB accepts.
    package var maxKeySize: Int { Int(mdb_env_get_maxkeysize(env)) }

    /// Flushes the map to disk. The corresponding C function is `mdb_env_sync`.
    package func sync(force: Bool = true) throws {
        try LMDBError.check(mdb_env_sync(env, force ? 1 : 0), "mdb_env_sync", path: path)
    }

    /// The handle of a named sub-database, opened (and, when `create`, created) once
    /// and cached. lmdb.h: a handle opened in a transaction that commits stays valid
    /// for the life of the environment.
    package func database(_ name: String, create: Bool = false) throws -> LMDBDatabase {
        if let dbi = databases.withLock({ $0[name] }) { return LMDBDatabase(dbi: dbi, name: name) }
        let dbi: MDB_dbi
        if create && !readOnly {
            dbi = try write { txn in try txn.openDatabase(name, create: true) }
        } else {
            // lmdb.h: a handle opened in a transaction that aborts is closed with it, so
            // open it in a read-only transaction of its own and commit that.
            gate.lockShared()
            defer { gate.unlock() }
            var raw: OpaquePointer?
            try LMDBError.check(
                mdb_txn_begin(env, nil, UInt32(MDB_RDONLY), &raw), "mdb_txn_begin(read-only)", path: path)
            do {
                dbi = try Txn.open(raw!, name, create: false)
            } catch {
                mdb_txn_abort(raw)
                throw error
            }
            try LMDBError.check(mdb_txn_commit(raw), "mdb_txn_commit(read-only)", path: path)
        }
        databases.withLock { $0[name] = dbi }
        return LMDBDatabase(dbi: dbi, name: name)
    }

    // MARK: Read transactions

    /// Runs `body` inside a read transaction on one consistent snapshot.
    ///
    /// Bytes the transaction lends are valid only inside `body`.
    /// - Warning: do not call ``write(_:)`` from inside `body`: a write that has to grow
    ///   the map waits for every read transaction to end, including this one.
    package func withRead<R>(_ body: (borrowing ReadTransaction) throws -> R) throws -> R {
        gate.lockShared()
        defer { gate.unlock() }
        let txn = try beginRead()
        let reader = ReadTransaction(txn: txn)
        defer { endRead(txn) }
        return try body(reader)
    }

    private func beginRead() throws -> OpaquePointer {
        while true {
            if let idle = idleReaders.withLock({ $0.popLast() })?.value {
                let rc = mdb_txn_renew(idle)
                if rc == 0 { return idle }
                mdb_txn_abort(idle)
                if rc == MDB_MAP_RESIZED {
                    try adoptResizeWhileShared()
                    continue
                }
                try LMDBError.check(rc, "mdb_txn_renew", path: path)
            }
            var txn: OpaquePointer?
            let rc = mdb_txn_begin(env, nil, UInt32(MDB_RDONLY), &txn)
            if rc == MDB_MAP_RESIZED {
                try adoptResizeWhileShared()
                continue
            }
            try LMDBError.check(rc, "mdb_txn_begin(read-only)", path: path)
            return txn!
        }
    }

    private func endRead(_ txn: OpaquePointer) {
        mdb_txn_reset(txn)
        let kept = idleReaders.withLock { idle -> Bool in
            guard idle.count < 64 else { return false }
            idle.append(UncheckedSendable(txn))
            return true
        }
        if !kept { mdb_txn_abort(txn) }
    }

    /// Another process grew the map. lmdb.h: call `mdb_env_set_mapsize` with size 0 to
    /// adopt the new size; no transaction of this process may be active, so the shared
    /// hold on the gate is traded for an exclusive one for the call.
    private func adoptResizeWhileShared() throws {
        // Nested inside another transaction of this thread, the map cannot change now.
        guard gate.sharedDepth == 1 else {
            throw LMDBError(
                code: .init(rawValue: MDB_MAP_RESIZED),
                operation: "mdb_txn_begin (nested in another transaction of this thread)", path: path)
        }
        gate.unlock()
        defer { gate.lockShared() }
        try setMapSizeExclusive(0)
    }

    private func setMapSizeExclusive(_ size: Int) throws {
        gate.lockExclusive()
        defer { gate.unlock() }
        // Reset read transactions hold no snapshot, but drop them so none spans the change.
        let idle = idleReaders.withLock { r in
            let all = r
            r.removeAll()
            return all
        }
        for txn in idle { mdb_txn_abort(txn.value) }
        try LMDBError.check(mdb_env_set_mapsize(env, size), "mdb_env_set_mapsize(\(size))", path: path)
    }

    // MARK: Write transactions

    /// Runs `body` in a write transaction and commits it.
    ///
    /// If the map fills (`MDB_MAP_FULL`), the transaction is aborted, the map doubles,
    /// and `body` runs again from the start, so `body` must be safe to repeat: it should
    /// only write through `txn`. Any other error aborts the transaction and is rethrown.
    /// Write transactions of one environment are serialized by LMDB.
    ///
    /// With `sync: false` the commit does not flush: its pages reach the disk when the
    /// system writes them back, or at the next synced commit or ``sync(force:)``. A
    /// process crash loses nothing committed; a system crash may lose or tear it.
    /// LMDB 0.9 takes `MDB_NOSYNC` per transaction (`mdb_txn_begin`) for the meta page
    /// only and syncs the data pages by the environment's flag, so the transaction also
    /// sets or clears the environment's `MDB_NOSYNC` (`mdb_env_set_flags`) once it holds
    /// LMDB's write lock: no other commit of this process runs until it has committed.
    ///
    /// - Throws: ``LMDBError`` from LMDB, or whatever `body` throws.
    package func write<R>(sync: Bool = true, _ body: (borrowing WriteTransaction) throws -> R) throws -> R {
        precondition(!readOnly, "write transaction on a read-only environment")
        while true {
            gate.lockShared()
            var raw: OpaquePointer?
            let rc = mdb_txn_begin(env, nil, sync ? 0 : UInt32(MDB_NOSYNC), &raw)
            if rc == MDB_MAP_RESIZED {
                gate.unlock()
                try setMapSizeExclusive(0)
                continue
            }
            do {
                try LMDBError.check(rc, "mdb_txn_begin(write)", path: path)
            } catch {
                gate.unlock()
                throw error
            }
            do {
                let txn = WriteTransaction(txn: raw!)
                let noSync = openedNoSync || !sync
                if noSync != noSyncNow {
                    try LMDBError.check(
                        mdb_env_set_flags(env, UInt32(MDB_NOSYNC), noSync ? 1 : 0), "mdb_env_set_flags", path: path)
                    noSyncNow = noSync
                }
                let result = try body(txn)
                try txn.commit()
                gate.unlock()
                return result
            } catch let error as LMDBError where error.code == .mapFull {
                gate.unlock()
                try grow()
            } catch {
                gate.unlock()
                throw error
            }
        }
    }

    /// Grows the map, doubling it, until `bytes` more than the pages in use fit: a write
    /// of known size then never runs twice for want of room (see ``write(sync:_:)``).
    /// Waits for every transaction of this process to end, and only when it grows.
    package func ensureRoom(forAnother bytes: Int) throws {
        let needed = usedBytes + bytes
        var next = mapSize
        while next < needed { next = next >= (1 << 40) ? next + (1 << 40) : next * 2 }
        if next > mapSize { try setMapSizeExclusive(next) }
    }

    /// Doubles the map. Waits for every transaction of this process to end.
    private func grow() throws {
        let current = mapSize
        let next = current >= (1 << 40) ? current + (1 << 40) : current * 2
        try setMapSizeExclusive(next)
    }
}

/// A named sub-database handle.
package struct LMDBDatabase: Sendable {
    package let dbi: MDB_dbi
    package let name: String
}

/// The gate between transactions and map changes: a readers-writer lock over
/// `pthread_rwlock_t` (which needs a stable address) that prefers a waiting map change over
/// new readers, so a steady stream of readers cannot hold a resize off forever.
///
/// A thread may take the shared side again while it holds it (a read inside a write
/// closure): only its outermost hold touches the lock, counted per thread, so a map change
/// waiting between the two cannot deadlock with it.
final class RWLock: @unchecked Sendable {
    private let lock: UnsafeMutablePointer<pthread_rwlock_t>
    /// Shared holds of the calling thread, kept in a thread-specific slot.
    private var depthKey = pthread_key_t()

    init() {
        lock = .allocate(capacity: 1)
        lock.initialize(to: pthread_rwlock_t())
        var attr = pthread_rwlockattr_t()
        precondition(pthread_rwlockattr_init(&attr) == 0)
        precondition(pthread_rwlockattr_setkind_np(&attr, Int32(PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP)) == 0)
        precondition(pthread_rwlock_init(lock, &attr) == 0)
        pthread_rwlockattr_destroy(&attr)
        precondition(pthread_key_create(&depthKey, nil) == 0)
    }

    deinit {
        pthread_key_delete(depthKey)
        pthread_rwlock_destroy(lock)
        lock.deallocate()
    }

    /// Shared holds the calling thread has now.
    var sharedDepth: Int { Int(bitPattern: pthread_getspecific(depthKey)) }

    private func setSharedDepth(_ d: Int) { pthread_setspecific(depthKey, UnsafeRawPointer(bitPattern: d)) }

    func lockShared() {
        let d = sharedDepth
        if d == 0 { precondition(pthread_rwlock_rdlock(lock) == 0) }
        setSharedDepth(d + 1)
    }

    func lockExclusive() {
        precondition(sharedDepth == 0, "exclusive hold asked for by a thread that holds the shared side")
        precondition(pthread_rwlock_wrlock(lock) == 0)
    }

    /// Releases the calling thread's innermost hold, shared or exclusive.
    func unlock() {
        let d = sharedDepth
        if d > 1 {
            setSharedDepth(d - 1)
            return
        }
        if d == 1 { setSharedDepth(0) }
        precondition(pthread_rwlock_unlock(lock) == 0)
    }
}

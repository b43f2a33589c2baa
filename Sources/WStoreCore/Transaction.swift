import CLMDB

/// A read-only view of one snapshot of the environment, lent to a
/// ``LMDBEnvironment/withRead(_:)`` closure.
///
/// - Warning: the buffers it returns point into the memory map. lmdb.h: "The memory
///   pointed to by the returned values is owned by the database ... Values returned
///   from the database are valid only until a subsequent update operation, or the
///   end of the transaction." Never keep them past the closure.
package struct ReadTransaction: ~Copyable {
    let txn: OpaquePointer

    /// Another view of the same transaction, for a wrapper type lent to a closure.
    package borrowing func view() -> ReadTransaction { ReadTransaction(txn: txn) }

    /// Looks up `key`; `nil` when absent. The corresponding C function is `mdb_get`.
    package func get(_ db: LMDBDatabase, _ key: [UInt8]) throws -> UnsafeRawBufferPointer? {
        try Txn.get(txn, db, key)
    }

    /// Visits the entries whose key starts with `prefix`, in key order, until `body`
    /// returns `false`. The corresponding C functions are `mdb_cursor_get` with
    /// `MDB_SET_RANGE` and `MDB_NEXT`.
    package func scan(
        _ db: LMDBDatabase, prefix: [UInt8],
        _ body: (UnsafeRawBufferPointer, UnsafeRawBufferPointer) throws -> Bool
    ) throws {
        try Txn.scan(txn, db, prefix: prefix, body)
    }

    /// The number of entries in `db`. The corresponding C function is `mdb_stat`.
    package func count(_ db: LMDBDatabase) throws -> Int { try Txn.count(txn, db) }

    /// The first key at or after `key` in `db`, or `nil`. The corresponding C function
    /// is `mdb_cursor_get` with `MDB_SET_RANGE`.
    package func firstKey(_ db: LMDBDatabase, atOrAfter key: [UInt8]) throws -> UnsafeRawBufferPointer? {
        try Txn.firstKey(txn, db, atOrAfter: key)
    }

    package func openDatabase(_ name: String, create: Bool) throws -> MDB_dbi {
        try Txn.open(txn, name, create: create)
    }
}

@available(*, unavailable)
extension ReadTransaction: Sendable {}

/// A write transaction. It owns its LMDB transaction: ``commit()`` consumes it, and
/// dropping it without a commit aborts every change.
///
/// lmdb.h: "A transaction and its cursors must only be used by a single thread", and
/// a write transaction must end on the thread that began it; it is not `Sendable`.
package struct WriteTransaction: ~Copyable {
    let txn: OpaquePointer
    /// `false` for a view lent to a higher layer: it neither commits nor aborts.
    private let owned: Bool

    init(txn: OpaquePointer) {
        self.txn = txn
        self.owned = true
    }

    private init(view txn: OpaquePointer) {
        self.txn = txn
        self.owned = false
    }

    deinit { if owned { mdb_txn_abort(txn) } }

    /// A non-owning view of this transaction, for a wrapper type that is itself lent
    /// to a closure. It must not outlive the closure this transaction was lent to.
    package borrowing func view() -> WriteTransaction { WriteTransaction(view: txn) }

    /// Commits every change. The corresponding C function is `mdb_txn_commit`.
    /// - Throws: ``LMDBError`` (`MDB_MAP_FULL` among others); the transaction is gone either way.
    package consuming func commit() throws {
        precondition(owned, "commit() on a transaction view")
        let t = txn
        discard self
        try LMDBError.check(mdb_txn_commit(t), "mdb_txn_commit")
    }

    package func get(_ db: LMDBDatabase, _ key: [UInt8]) throws -> UnsafeRawBufferPointer? {
        try Txn.get(txn, db, key)
    }

    package func scan(
        _ db: LMDBDatabase, prefix: [UInt8],
        _ body: (UnsafeRawBufferPointer, UnsafeRawBufferPointer) throws -> Bool
    ) throws {
        try Txn.scan(txn, db, prefix: prefix, body)
    }

    package func count(_ db: LMDBDatabase) throws -> Int { try Txn.count(txn, db) }

    package func openDatabase(_ name: String, create: Bool) throws -> MDB_dbi {
        try Txn.open(txn, name, create: create)
    }

    /// Stores `value` under `key`, replacing what was there. The corresponding C function is `mdb_put`.
    package func put(_ db: LMDBDatabase, _ key: [UInt8], _ value: UnsafeRawBufferPointer) throws {
        try key.withUnsafeBytes { k in
            var mk = MDB_val(mv_size: k.count, mv_data: UnsafeMutableRawPointer(mutating: k.baseAddress))
            var mv = MDB_val(mv_size: value.count, mv_data: UnsafeMutableRawPointer(mutating: value.baseAddress))
            try LMDBError.check(mdb_put(txn, db.dbi, &mk, &mv, 0), "mdb_put(\(db.name))", key: Txn.printable(k))
        }
    }

    /// Reserves `size` bytes under `key` and lets `fill` write them in place
    /// (`MDB_RESERVE`: no intermediate copy). The corresponding C function is `mdb_put`.
    package func reserve<R>(
        _ db: LMDBDatabase, _ key: [UInt8], size: Int,
        _ fill: (UnsafeMutableRawBufferPointer) throws -> R
    ) throws -> R {
        try key.withUnsafeBytes { k in
            var mk = MDB_val(mv_size: k.count, mv_data: UnsafeMutableRawPointer(mutating: k.baseAddress))
            var mv = MDB_val(mv_size: size, mv_data: nil)
            try LMDBError.check(
                mdb_put(txn, db.dbi, &mk, &mv, UInt32(MDB_RESERVE)), "mdb_put(\(db.name), MDB_RESERVE)",
                key: Txn.printable(k))
            return try fill(UnsafeMutableRawBufferPointer(start: mv.mv_data, count: size))
        }
    }

    /// Deletes `key`; returns whether it existed. The corresponding C function is `mdb_del`.
    @discardableResult
    package func delete(_ db: LMDBDatabase, _ key: [UInt8]) throws -> Bool {
        try key.withUnsafeBytes { k in
            var mk = MDB_val(mv_size: k.count, mv_data: UnsafeMutableRawPointer(mutating: k.baseAddress))
            let rc = mdb_del(txn, db.dbi, &mk, nil)
            if rc == MDB_NOTFOUND { return false }
            try LMDBError.check(rc, "mdb_del(\(db.name))", key: Txn.printable(k))
            return true
        }
    }
}

@available(*, unavailable)
extension WriteTransaction: Sendable {}

/// Operations shared by read and write transactions.
enum Txn {
    static func get(_ txn: OpaquePointer, _ db: LMDBDatabase, _ key: [UInt8]) throws -> UnsafeRawBufferPointer? {
        try key.withUnsafeBytes { k in
            var mk = MDB_val(mv_size: k.count, mv_data: UnsafeMutableRawPointer(mutating: k.baseAddress))
            var mv = MDB_val()
            let rc = mdb_get(txn, db.dbi, &mk, &mv)
            if rc == MDB_NOTFOUND { return nil }
            try LMDBError.check(rc, "mdb_get(\(db.name))", key: printable(k))
            return UnsafeRawBufferPointer(start: mv.mv_data, count: mv.mv_size)
        }
    }

    static func scan(
        _ txn: OpaquePointer, _ db: LMDBDatabase, prefix: [UInt8],
        _ body: (UnsafeRawBufferPointer, UnsafeRawBufferPointer) throws -> Bool
    ) throws {
        var cursor: OpaquePointer?
        try LMDBError.check(mdb_cursor_open(txn, db.dbi, &cursor), "mdb_cursor_open(\(db.name))")
        defer { mdb_cursor_close(cursor) }
        try prefix.withUnsafeBytes { p in
            var mk = MDB_val(mv_size: p.count, mv_data: UnsafeMutableRawPointer(mutating: p.baseAddress))
            var mv = MDB_val()
            var op = p.isEmpty ? MDB_FIRST : MDB_SET_RANGE
            while true {
                let rc = mdb_cursor_get(cursor, &mk, &mv, op)
                if rc == MDB_NOTFOUND { return }
                try LMDBError.check(rc, "mdb_cursor_get(\(db.name))")
                let key = UnsafeRawBufferPointer(start: mk.mv_data, count: mk.mv_size)
                if key.count < p.count || !zip(key, p).allSatisfy({ $0 == $1 }) { return }
                if try !body(key, UnsafeRawBufferPointer(start: mv.mv_data, count: mv.mv_size)) { return }
                op = MDB_NEXT
            }
        }
    }

    static func firstKey(_ txn: OpaquePointer, _ db: LMDBDatabase, atOrAfter key: [UInt8]) throws
        -> UnsafeRawBufferPointer?
    {
        var cursor: OpaquePointer?
        try LMDBError.check(mdb_cursor_open(txn, db.dbi, &cursor), "mdb_cursor_open(\(db.name))")
        defer { mdb_cursor_close(cursor) }
        return try key.withUnsafeBytes { k in
            var mk = MDB_val(mv_size: k.count, mv_data: UnsafeMutableRawPointer(mutating: k.baseAddress))
            var mv = MDB_val()
            let rc = mdb_cursor_get(cursor, &mk, &mv, k.isEmpty ? MDB_FIRST : MDB_SET_RANGE)
            if rc == MDB_NOTFOUND { return nil }
            try LMDBError.check(rc, "mdb_cursor_get(\(db.name))")
            return UnsafeRawBufferPointer(start: mk.mv_data, count: mk.mv_size)
        }
    }

    static func count(_ txn: OpaquePointer, _ db: LMDBDatabase) throws -> Int {
        var st = MDB_stat()
        try LMDBError.check(mdb_stat(txn, db.dbi, &st), "mdb_stat(\(db.name))")
        return Int(st.ms_entries)
    }

    static func open(_ txn: OpaquePointer, _ name: String, create: Bool) throws -> MDB_dbi {
        var dbi = MDB_dbi()
        try LMDBError.check(mdb_dbi_open(txn, name, create ? UInt32(MDB_CREATE) : 0, &dbi), "mdb_dbi_open(\(name))")
        return dbi
    }

    /// A key as text for error messages: NUL separators shown as `/`.
    static func printable(_ k: UnsafeRawBufferPointer) -> String {
        String(decoding: k.map { $0 == 0 ? UInt8(ascii: "/") : $0 }, as: UTF8.self)
    }
}

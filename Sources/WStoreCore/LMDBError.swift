import CLMDB

/// An error returned by LMDB, with the operation and key that failed.
///
/// Every `mdb_*` return code passes through ``LMDBError/check(_:_:key:)``, so the context
/// is captured where the failure happens. Match a specific condition with `~=`:
///
///     catch let error as LMDBError where error.code == .mapFull { ... }
///     catch LMDBError.notFound { ... }
public struct LMDBError: Error, CustomStringConvertible, Sendable {
    /// An LMDB return code (lmdb.h `MDB_*` codes and errno values).
    public struct Code: RawRepresentable, Hashable, Sendable {
        public let rawValue: Int32
        public init(rawValue: Int32) { self.rawValue = rawValue }

        public static let keyExist = Code(rawValue: MDB_KEYEXIST)
        public static let notFound = Code(rawValue: MDB_NOTFOUND)
        public static let pageNotFound = Code(rawValue: MDB_PAGE_NOTFOUND)
        public static let corrupted = Code(rawValue: MDB_CORRUPTED)
        public static let panic = Code(rawValue: MDB_PANIC)
        public static let versionMismatch = Code(rawValue: MDB_VERSION_MISMATCH)
        public static let invalid = Code(rawValue: MDB_INVALID)
        public static let mapFull = Code(rawValue: MDB_MAP_FULL)
        public static let dbsFull = Code(rawValue: MDB_DBS_FULL)
        public static let readersFull = Code(rawValue: MDB_READERS_FULL)
        public static let txnFull = Code(rawValue: MDB_TXN_FULL)
        public static let cursorFull = Code(rawValue: MDB_CURSOR_FULL)
        public static let pageFull = Code(rawValue: MDB_PAGE_FULL)
        public static let mapResized = Code(rawValue: MDB_MAP_RESIZED)
        public static let incompatible = Code(rawValue: MDB_INCOMPATIBLE)
        public static let badReaderSlot = Code(rawValue: MDB_BAD_RSLOT)
        public static let badTransaction = Code(rawValue: MDB_BAD_TXN)
        public static let badValueSize = Code(rawValue: MDB_BAD_VALSIZE)
        public static let badDBI = Code(rawValue: MDB_BAD_DBI)
    }

    public let code: Code
    /// The LMDB function that failed, e.g. `mdb_put`.
    public let operation: String
    /// The key involved, printable, when there was one.
    public let key: String?
    /// The environment path, when known.
    public let path: String?

    public init(code: Code, operation: String, key: String? = nil, path: String? = nil) {
        self.code = code
        self.operation = operation
        self.key = key
        self.path = path
    }

    /// lmdb.h `mdb_strerror`: a message for an LMDB code or an errno value.
    public var message: String { String(cString: mdb_strerror(code.rawValue)) }

    public var description: String {
        var s = "\(operation) failed: \(message)"
        if let key { s += " (key \(key.quoted))" }
        if let path { s += " [\(path)]" }
        switch code {
        case .readersFull: s += "; too many concurrent readers"
        case .invalid, .versionMismatch: s += "; this is not an LMDB environment this build can read"
        case .corrupted, .pageNotFound, .panic: s += "; the store is corrupt, restore it from its source"
        default: break
        }
        return s.escapingControls
    }

    /// The one funnel from an LMDB return code to a thrown error.
    @inline(__always)
    package static func check(
        _ rc: Int32, _ operation: @autoclosure () -> String,
        key: @autoclosure () -> String? = nil,
        path: @autoclosure () -> String? = nil
    ) throws(LMDBError) {
        if rc != 0 {
            throw LMDBError(code: Code(rawValue: rc), operation: operation(), key: key(), path: path())
        }
    }

}

/// Lets callers write `catch LMDBError.mapFull`.
public func ~= (code: LMDBError.Code, error: any Error) -> Bool {
    (error as? LMDBError)?.code == code
}

extension LMDBError {
    public static var mapFull: Code { .mapFull }
    public static var notFound: Code { .notFound }
}

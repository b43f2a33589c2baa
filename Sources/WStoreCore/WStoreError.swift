/// An error from wstore itself: bad records, bad arguments, missing names, failed file operations.
///
/// LMDB failures are ``LMDBError``; this type covers what wstore checks on its own.
/// Every case prints as one line a user can act on.
public enum WStoreError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The stored checksum of `name` does not match its bytes.
    case checksumMismatch(name: String, expected: UInt64, actual: UInt64)
    /// A record header or frame is damaged or inconsistent.
    case corruptRecord(name: String, reason: String)
    /// The LMDB data file itself is damaged or truncated (format-spec/FORMAT.md §7): refused
    /// before LMDB maps or walks it.
    case damagedFile(path: String, reason: String)
    /// The data was written by a newer wstore format than this build reads.
    case newerFormat(what: String, found: Int, supported: Int)
    /// No tensor (or expert, or metadata) by that name.
    case notFound(String)
    /// The path is not a wstore store.
    case notAStore(path: String, reason: String)
    /// Zero-copy access was asked of a compressed record.
    case notRaw(name: String, codec: String)
    /// An argument the caller passed is unusable.
    case invalidArgument(String)
    /// A zstd call failed.
    case codec(String)
    /// An operating-system call failed: `call` (`open`, `write`, `fsync`, `rename`, ...) on
    /// `path` (`from -> to` for a rename) with errno `errno`.
    case io(call: String, path: String, errno: Int32)

    /// One line: a control character in a name or message is printed as an escape.
    public var description: String { text.escapingControls }

    private var text: String {
        switch self {
        case let .checksumMismatch(name, expected, actual):
            "checksum mismatch in \(name): stored xxh3 \(hex(expected)), computed \(hex(actual)); the store is damaged: find every damaged entry with `wstore verify` (`wstore kv inspect --verify` for a KV store) and write it again from its source"
        case let .corruptRecord(name, reason):
            "corrupt record \(name): \(reason); the store is damaged: find every damaged entry with `wstore verify` (`wstore kv inspect --verify` for a KV store) and write it again from its source"
        case let .damagedFile(path, reason):
            "\(path) is damaged: \(reason); the store cannot be read safely: `wstore verify` lists what is wrong, restore the store from its source"
        case let .newerFormat(what, found, supported):
            "\(what) uses wstore format version \(found), but this build reads versions up to \(supported); upgrade wstore to read it"
        case let .notFound(name):
            "not found: \(name)"
        case let .notAStore(path, reason):
            "\(path) is not a wstore store: \(reason)"
        case let .notRaw(name, codec):
            "\(name) is stored with codec \(codec); zero-copy access needs a raw record, decode it instead"
        case let .invalidArgument(message):
            message
        case let .codec(message):
            message
        case let .io(call, path, code):
            "\(call) \(path): \(Posix.message(errno: code))"
        }
    }
}

private func hex(_ v: UInt64) -> String {
    let s = String(v, radix: 16)
    return "0x" + String(repeating: "0", count: 16 - s.count) + s
}

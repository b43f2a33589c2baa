import CWStoreHeader
import WStoreCore
import WeightStore

/// Errors the C ABI raises on its own, beside those of the weight store.
enum ABIError: Error, CustomStringConvertible {
    /// A NULL handle or pointer, an unknown name or flag, a number out of range.
    case invalidArgument(String)
    /// The caller's buffer cannot hold the tensor.
    case bufferTooSmall(name: String, needed: Int, given: Int)
    /// A callback returned non-zero.
    case aborted(callback: String, returned: Int32)

    var description: String {
        switch self {
        case .invalidArgument(let m): m
        case let .bufferTooSmall(name, needed, given):
            "buffer of \(given) bytes is too small for \(name), which needs \(needed)"
        case let .aborted(callback, returned): "\(callback) returned \(returned); stopped"
        }
    }
}

/// The status code of `error` (one of `enum wstore_status`).
func statusCode(of error: any Error) -> Int32 {
    let s: wstore_status
    switch error {
    case let e as ABIError:
        switch e {
        case .invalidArgument: s = WSTORE_E_INVALID_ARGUMENT
        case .bufferTooSmall: s = WSTORE_E_BUFFER_TOO_SMALL
        case .aborted: s = WSTORE_E_ABORTED
        }
    case let e as WStoreError:
        switch e {
        case .checksumMismatch, .corruptRecord, .damagedFile, .codec: s = WSTORE_E_CORRUPT
        case .newerFormat: s = WSTORE_E_NEWER_FORMAT
        case .notFound: s = WSTORE_E_NOT_FOUND
        case .notAStore: s = WSTORE_E_NOT_A_STORE
        case .notRaw: s = WSTORE_E_NOT_RAW
        case .invalidArgument: s = WSTORE_E_INVALID_ARGUMENT
        case .io: s = WSTORE_E_IO
        }
    case let e as ResidencyError:
        switch e {
        case .notIndexed: s = WSTORE_E_NOT_FOUND
        case .expertLargerThanBudget, .budgetExhausted: s = WSTORE_E_BUDGET
        }
    case let e as LMDBError:
        switch e.code {
        case .corrupted, .pageNotFound, .panic: s = WSTORE_E_CORRUPT
        case .invalid, .versionMismatch: s = WSTORE_E_NOT_A_STORE
        default: s = WSTORE_E_IO
        }
    default: s = WSTORE_E_INTERNAL
    }
    return s.rawValue
}

/// Runs `body`, turning a thrown error into its status code and the thread's last error
/// message. Every exported function that can fail funnels through here.
func guarded(_ body: () throws -> Void) -> Int32 {
    do {
        try body()
        return WSTORE_OK.rawValue
    } catch {
        setLastError(String(describing: error))
        return statusCode(of: error)
    }
}

/// A NUL-terminated UTF-8 argument as a String.
func string(_ p: UnsafePointer<CChar>?, _ what: String) throws -> String {
    guard let p else { throw ABIError.invalidArgument("\(what) is NULL") }
    guard let s = String(validatingCString: p) else { throw ABIError.invalidArgument("\(what) is not valid UTF-8") }
    return s
}

/// The model namespace named by `p`; NULL is the default model.
func modelName(_ p: UnsafePointer<CChar>?) throws -> String {
    p == nil ? WeightStore.defaultModel : try string(p, "model")
}

/// Checks that a required pointer argument is not NULL.
func required<T>(_ p: T?, _ what: String) throws -> T {
    guard let p else { throw ABIError.invalidArgument("\(what) is NULL") }
    return p
}

// MARK: Last error, thread-local

/// The thread-local slot of the last error message: a malloc'd C string, freed when
/// replaced or when its thread exits.
private let lastError = Posix.ThreadLocalCString()

/// A C string that lives as long as the process and is never written: safe to share.
struct StaticCString: @unchecked Sendable {
    let pointer: UnsafePointer<CChar>
    init(_ s: String) { pointer = UnsafePointer(Posix.duplicateCString(s)) }
}

private let emptyCString = StaticCString("")

/// Replaces the calling thread's last error message (flattened to one line).
func setLastError(_ message: String) {
    let line = message.split(whereSeparator: \.isNewline).joined(separator: " ")
    lastError.set(line)
}

/// See `wstore_last_error` in wstore.h.
@_cdecl("wstore_last_error")
public func wstore_last_error() -> UnsafePointer<CChar>? {
    lastError.value ?? emptyCString.pointer
}

private let statusNames: [Int32: StaticCString] = {
    let all: [(wstore_status, String)] = [
        (WSTORE_OK, "WSTORE_OK"), (WSTORE_E_INVALID_ARGUMENT, "WSTORE_E_INVALID_ARGUMENT"),
        (WSTORE_E_NOT_FOUND, "WSTORE_E_NOT_FOUND"), (WSTORE_E_NOT_A_STORE, "WSTORE_E_NOT_A_STORE"),
        (WSTORE_E_NEWER_FORMAT, "WSTORE_E_NEWER_FORMAT"), (WSTORE_E_CORRUPT, "WSTORE_E_CORRUPT"),
        (WSTORE_E_NOT_RAW, "WSTORE_E_NOT_RAW"), (WSTORE_E_BUFFER_TOO_SMALL, "WSTORE_E_BUFFER_TOO_SMALL"),
        (WSTORE_E_BUDGET, "WSTORE_E_BUDGET"), (WSTORE_E_ABORTED, "WSTORE_E_ABORTED"),
        (WSTORE_E_IO, "WSTORE_E_IO"), (WSTORE_E_INTERNAL, "WSTORE_E_INTERNAL"),
    ]
    return Dictionary(uniqueKeysWithValues: all.map { ($0.0.rawValue, StaticCString($0.1)) })
}()

private let unknownStatusName = StaticCString("WSTORE_E_UNKNOWN")

/// See `wstore_status_name` in wstore.h.
@_cdecl("wstore_status_name")
public func wstore_status_name(_ status: Int32) -> UnsafePointer<CChar>? {
    (statusNames[status] ?? unknownStatusName).pointer
}

private let versionCString = StaticCString(wstoreVersion)

/// See `wstore_version` in wstore.h.
@_cdecl("wstore_version")
public func wstore_version() -> UnsafePointer<CChar>? { versionCString.pointer }

/// See `wstore_abi_version` in wstore.h.
@_cdecl("wstore_abi_version")
public func wstore_abi_version() -> Int32 { WSTORE_ABI_VERSION }

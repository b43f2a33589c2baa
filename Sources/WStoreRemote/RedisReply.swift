/// One reply from a Redis server, copied out of hiredis's reply object.
public enum RedisReply: Sendable, Equatable {
    /// A bulk string (binary-safe).
    case string([UInt8])
    /// A status line (`OK`, `PONG`).
    case status(String)
    case integer(Int)
    /// A missing value (a GET of an absent key, a `SET NX` that did not set).
    case null
    case array([RedisReply])
    /// An error line (`ERR ...`, `MOVED 3999 127.0.0.1:6381`).
    case error(String)

    /// The bulk string's bytes, or `nil`.
    public var bytes: [UInt8]? { if case let .string(b) = self { b } else { nil } }
    /// The integer, or `nil`.
    public var int: Int? { if case let .integer(n) = self { n } else { nil } }
    /// The error line, or `nil`.
    public var errorMessage: String? { if case let .error(m) = self { m } else { nil } }
    /// A string or status as text.
    public var text: String? {
        switch self {
        case let .string(b): String(decoding: b, as: UTF8.self)
        case let .status(s): s
        default: nil
        }
    }
}

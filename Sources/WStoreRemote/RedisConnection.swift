import CHiredis
import Foundation

/// One blocking connection to one Redis server: connect and command timeouts, AUTH, pipelines.
///
/// Not thread-safe: ``RedisClient`` serializes its use. After any I/O or protocol failure the
/// hiredis context is unusable (hiredis.h: "once an error is returned the context cannot be
/// reused"), so the owner drops the connection and opens a new one.
final class RedisConnection {
    let endpoint: RedisEndpoint
    private let context: UnsafeMutablePointer<redisContext>

    /// Connects, authenticates and checks that a Redis server answers (`PING`).
    /// - Throws: ``RemoteError`` (refused, timeout, auth, not Redis).
    /// The corresponding C function is `redisConnectWithTimeout`.
    init(_ endpoint: RedisEndpoint, connectTimeout: Duration, commandTimeout: Duration) throws {
        self.endpoint = endpoint
        guard let c = redisConnectWithTimeout(endpoint.host, Int32(endpoint.port), timeval(connectTimeout)) else {
            throw RemoteError.io(endpoint: endpoint.description, message: "out of memory allocating a connection")
        }
        if c.pointee.err != 0 {
            let error = RedisConnection.error(c, endpoint: endpoint, operation: "connect")
            redisFree(c)
            throw error
        }
        context = c
        redisSetTimeout(c, timeval(commandTimeout))
        if let password = endpoint.password {
            let args = [Array("AUTH".utf8)] + (endpoint.user.map { [Array($0.utf8)] } ?? []) + [Array(password.utf8)]
            let reply: RedisReply
            do { reply = try run([args], operation: "AUTH")[0] } catch let e as RemoteError {
                throw RedisConnection.notRedisIfProtocol(e, endpoint: endpoint)
            }
            if let m = reply.errorMessage {
                throw RemoteError.authFailed(endpoint: endpoint.description, message: m)
            }
        }
        let pong: RedisReply
        do { pong = try run([[Array("PING".utf8)]], operation: "PING")[0] } catch let e as RemoteError {
            throw RedisConnection.notRedisIfProtocol(e, endpoint: endpoint)
        }
        switch pong {
        case .status("PONG"): break
        case let .error(m) where m.hasPrefix("NOAUTH") || m.hasPrefix("WRONGPASS"):
            throw RemoteError.authFailed(endpoint: endpoint.description, message: m)
        default:
            throw RemoteError.notRedis(endpoint: endpoint.description, detail: "PING answered \(pong)")
        }
    }

    deinit { redisFree(context) }

    /// Sends every command, then reads every reply: one round trip for the lot.
    ///
    /// Each command is its argument list (binary-safe). Error replies come back as
    /// ``RedisReply/error(_:)``; a failed connection throws.
    /// The corresponding C functions are `redisAppendCommandArgv` and `redisGetReply`.
    func run(_ commands: [[[UInt8]]], operation: String) throws -> [RedisReply] {
        var replies: [RedisReply] = []
        replies.reserveCapacity(commands.count)
        try run(commands, operation: operation) { _, reply in replies.append(reply) }
        return replies
    }

    /// As ``run(_:operation:)``, handing each reply to `each` (with its command's index) as soon as
    /// it is read, while later replies are still on the wire.
    func run(_ commands: [[[UInt8]]], operation: String, each: (Int, RedisReply) throws -> Void) throws {
        // A write to a connection the server reset raises SIGPIPE, whose default action ends
        // the process; hiredis writes with plain write(2). SIGPIPE is sent to the writing
        // thread, so it is blocked here for the call, and one it raised is taken off before
        // the mask is restored: the write fails with EPIPE instead, an error like any other.
        var pipe = sigset_t(), previous = sigset_t()
        sigemptyset(&pipe)
        sigaddset(&pipe, SIGPIPE)
        pthread_sigmask(SIG_BLOCK, &pipe, &previous)
        defer {
            var pending = sigset_t()
            sigpending(&pending)
            if sigismember(&pending, SIGPIPE) == 1 && sigismember(&previous, SIGPIPE) == 0 {
                var now = timespec()
                sigtimedwait(&pipe, nil, &now)
            }
            pthread_sigmask(SIG_SETMASK, &previous, nil)
        }
        for args in commands {
            let status = withArgv(args) { argv, lengths in
                redisAppendCommandArgv(context, Int32(args.count), argv, lengths)
            }
            if status != REDIS_OK { throw RedisConnection.error(context, endpoint: endpoint, operation: operation) }
        }
        for k in commands.indices {
            var raw: UnsafeMutableRawPointer?
            guard redisGetReply(context, &raw) == REDIS_OK, let raw else {
                throw RedisConnection.error(context, endpoint: endpoint, operation: operation)
            }
            let reply = RedisConnection.convert(raw.assumingMemoryBound(to: redisReply.self))
            freeReplyObject(raw)
            try each(k, reply)
        }
    }

    /// Lends hiredis pointers to each argument's bytes; hiredis copies them into its output
    /// buffer before `redisAppendCommandArgv` returns.
    private func withArgv<R>(
        _ args: [[UInt8]], _ body: (UnsafeMutablePointer<UnsafePointer<CChar>?>, UnsafePointer<Int>) -> R
    ) -> R {
        var pointers = [UnsafePointer<CChar>?](repeating: nil, count: args.count)
        let lengths = args.map(\.count)
        func nest(_ i: Int) -> R {
            if i == args.count {
                return pointers.withUnsafeMutableBufferPointer { p in
                    lengths.withUnsafeBufferPointer { body(p.baseAddress!, $0.baseAddress!) }
                }
            }
            return args[i].withUnsafeBufferPointer { b in
                pointers[i] =
                    b.baseAddress.map { UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self) }
                    ?? RedisConnection.emptyArgument
                return nest(i + 1)
            }
        }
        return nest(0)
    }

    // A valid pointer for a zero-length argument (hiredis copies 0 bytes from it); never written.
    nonisolated(unsafe) private static let emptyArgument: UnsafePointer<CChar> = {
        let p = UnsafeMutablePointer<CChar>.allocate(capacity: 1)
        p.initialize(to: 0)
        return UnsafePointer(p)
    }()

    private static func convert(_ r: UnsafeMutablePointer<redisReply>) -> RedisReply {
        let v = r.pointee
        switch v.type {
        case REDIS_REPLY_STRING:
            return .string(v.len == 0 ? [] : Array(UnsafeRawBufferPointer(start: v.str, count: Int(v.len))))
        case REDIS_REPLY_STATUS:
            return .status(String(decoding: UnsafeRawBufferPointer(start: v.str, count: Int(v.len)), as: UTF8.self))
        case REDIS_REPLY_ERROR:
            return .error(String(decoding: UnsafeRawBufferPointer(start: v.str, count: Int(v.len)), as: UTF8.self))
        case REDIS_REPLY_INTEGER:
            return .integer(Int(v.integer))
        case REDIS_REPLY_ARRAY:
            return .array((0 ..< Int(v.elements)).map { convert(v.element[$0]!) })
        default:
            return .null
        }
    }

    /// The context's error as a ``RemoteError``. hiredis.h: `err` is one of the REDIS_ERR_* codes
    /// and `errstr` says what happened (for I/O errors, strerror of errno).
    private static func error(_ c: UnsafeMutablePointer<redisContext>, endpoint: RedisEndpoint, operation: String)
        -> RemoteError
    {
        let text = withUnsafeBytes(of: c.pointee.errstr) { b in
            String(decoding: b.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
        let e = endpoint.description
        switch c.pointee.err {
        case REDIS_ERR_PROTOCOL:
            return .notRedis(endpoint: e, detail: text)
        case REDIS_ERR_EOF:
            return .io(endpoint: e, message: "the server closed the connection during \(operation)")
        default:
            let lower = text.lowercased()
            if lower.contains("refused") { return .connectionRefused(endpoint: e) }
            if lower.contains("temporarily unavailable") || lower.contains("timed out") || lower.contains("in progress")
            {
                return .timeout(endpoint: e, operation: operation)
            }
            return .io(endpoint: e, message: "\(operation) failed: \(text)")
        }
    }

    /// During the handshake, a closed connection or garbage means something other than Redis listens.
    private static func notRedisIfProtocol(_ e: RemoteError, endpoint: RedisEndpoint) -> RemoteError {
        if case .io = e {
            return .notRedis(endpoint: endpoint.description, detail: "it closed the connection instead of answering")
        }
        return e
    }
}

private func timeval(_ d: Duration) -> timeval {
    let (s, atto) = d.components
    return Glibc.timeval(tv_sec: Int(s), tv_usec: Int(atto / 1_000_000_000_000))
}

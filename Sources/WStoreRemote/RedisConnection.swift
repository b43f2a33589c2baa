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
    init(_ endpoint: RedisEndpoint, connectTimeout: Duration, commandTimeout: Duration, windowBytes: Int = 0) throws {
        self.endpoint = endpoint
        self.windowBytes = windowBytes
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
        // Replies are built as ``RedisReply`` values while the reader parses (ReplyBuilder).
        c.pointee.reader.pointee.fn = ReplyBuilder.functions
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

    deinit {
        redisFree(context)
    }

    /// Reply bytes a pipeline keeps in flight (0: every command is sent at once); see ``run(_:operation:each:)``.
    let windowBytes: Int

    /// The most unused reply buffer the connection keeps between replies.
    static let keptReaderBuffer = 256 << 20
    /// Bytes asked of one read(2); hiredis's own `redisBufferRead` asks 16 KiB.
    static let readSize = 1 << 20

    /// Sends the commands pipelined and reads every reply.
    ///
    /// Each command is its argument list (binary-safe). Error replies come back as
    /// ``RedisReply/error(_:)``; a failed connection throws.
    /// The corresponding C functions are `redisAppendCommandArgv` and (see `nextReply`) `redisGetReplyFromReader`.
    func run(_ commands: [[[UInt8]]], operation: String) throws -> [RedisReply] {
        var replies: [RedisReply] = []
        replies.reserveCapacity(commands.count)
        try run(commands, operation: operation) { _, reply in replies.append(reply) }
        return replies
    }

    /// As ``run(_:operation:)``, handing each reply to `each` (with its command's index) as soon as
    /// it is read, while later replies are still on the wire.
    ///
    /// With ``windowBytes`` 0 every command is sent at once (one round trip for the lot). Otherwise
    /// the pipeline is a sliding window: after each reply, more commands are sent so that about
    /// `windowBytes` of replies (judged by the mean size of those read so far) stay in flight,
    /// at least 1 command and at first 4; they are written when half the window has been read.
    /// Redis builds the replies of all the commands it has read before it writes any, so a
    /// pipeline of many MiB-sized values would have it copy them all into its output buffers
    /// first. Small replies go many per round trip, replies as large as the window one at a
    /// time (format-spec/KV.md §5 has the measurements behind the default).
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
        var sent = 0, replyBytes = 0
        func send(upTo n: Int) throws {
            let before = sent
            while sent < min(n, commands.count) {
                let args = commands[sent]
                let status = withArgv(args) { argv, lengths in
                    redisAppendCommandArgv(context, Int32(args.count), argv, lengths)
                }
                if status != REDIS_OK { throw RedisConnection.error(context, endpoint: endpoint, operation: operation) }
                sent += 1
            }
            // The first commands go out with the first read (nextReply); later ones at once.
            if sent > before && before > 0 { try flush(operation: operation) }
        }
        try send(upTo: windowBytes == 0 ? commands.count : 4)
        for k in commands.indices {
            if k > 0 && sent < commands.count {
                // Topped up when half the window has been read: one write per half window.
                let mean = max(1, replyBytes / k)
                let window = max(1, windowBytes / mean)
                if sent - k <= window / 2 { try send(upTo: k + window) }
            }
            let reply = ReplyBuilder.take(try nextReply(operation: operation))
            replyBytes += RedisConnection.size(reply)
            try each(k, reply)
        }
    }

    /// The next reply (a ``ReplyBuilder`` object), as `redisGetReply` reads it (flush what is
    /// queued, then read until a reply is complete), but reading up to ``readSize`` bytes per
    /// read(2) straight into the end of the reader's buffer, as `redisReaderFeed` would append
    /// them without the copy: a MiB-sized value takes a few dozen system calls instead of
    /// hiredis's thousands of 16 KiB reads. The buffer is kept between replies up to
    /// ``keptReaderBuffer`` (read.h's `maxbuf` rule, which would free and regrow it for every
    /// MiB-sized value). The socket is blocking with the command timeout set
    /// (`redisSetTimeout`: SO_RCVTIMEO), so a read that times out fails with EAGAIN.
    /// The corresponding C functions are `redisGetReplyFromReader`, `redisBufferWrite`,
    /// `sdsMakeRoomFor` and `sdsIncrLen`.
    private func nextReply(operation: String) throws -> UnsafeMutableRawPointer {
        var raw: UnsafeMutableRawPointer?
        guard redisGetReplyFromReader(context, &raw) == REDIS_OK else {
            throw RedisConnection.error(context, endpoint: endpoint, operation: operation)
        }
        if let raw { return raw }
        try flush(operation: operation)
        let e = endpoint.description
        let reader = context.pointee.reader!
        while true {
            if reader.pointee.len == 0 && sdsavail(reader.pointee.buf) > RedisConnection.keptReaderBuffer {
                sdsfree(reader.pointee.buf)
                reader.pointee.buf = sdsempty()
                reader.pointee.pos = 0
            }
            guard let room = sdsMakeRoomFor(reader.pointee.buf, RedisConnection.readSize) else {
                throw RemoteError.io(endpoint: e, message: "out of memory reading a reply to \(operation)")
            }
            reader.pointee.buf = room
            let n = read(context.pointee.fd, room + reader.pointee.len, RedisConnection.readSize)
            if n == 0 { throw RemoteError.io(endpoint: e, message: "the server closed the connection during \(operation)") }
            if n < 0 {
                let code = errno
                if code == EINTR { continue }
                if code == EAGAIN || code == EWOULDBLOCK { throw RemoteError.timeout(endpoint: e, operation: operation) }
                throw RemoteError.io(endpoint: e, message: "\(operation) failed: \(String(cString: strerror(code)))")
            }
            sdsIncrLen(room, Int32(n))
            reader.pointee.len += n
            guard redisGetReplyFromReader(context, &raw) == REDIS_OK else {
                throw RedisConnection.error(context, endpoint: endpoint, operation: operation)
            }
            if let raw { return raw }
        }
    }

    /// Writes every command queued in the context's output buffer (blocking, within the command timeout).
    /// The corresponding C function is `redisBufferWrite`.
    private func flush(operation: String) throws {
        var done: Int32 = 0
        repeat {
            guard redisBufferWrite(context, &done) == REDIS_OK else {
                throw RedisConnection.error(context, endpoint: endpoint, operation: operation)
            }
        } while done == 0
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

    /// Bytes of a reply's strings (a rough measure of its size on the wire).
    private static func size(_ r: RedisReply) -> Int {
        switch r {
        case let .array(a): a.reduce(16) { $0 + size($1) }
        case let .string(b): 16 + b.count
        case let .status(t), let .error(t): 16 + t.utf8.count
        case .integer, .null: 16
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

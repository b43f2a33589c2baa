import Foundation

/// A blocking Redis client for one standalone server or a Redis Cluster, safe to share across threads.
///
/// Commands are pipelined: ``pipeline(_:)`` sends a batch in one round trip per node. In a
/// cluster each command goes to the node that owns its key's slot (from `CLUSTER SLOTS`);
/// a `MOVED` reply refreshes the slot map and resends, an `ASK` reply resends once to the
/// named node after `ASKING`. Calls are serialized by a lock.
public final class RedisClient: @unchecked Sendable {
    /// Timeouts.
    public struct Options: Sendable {
        /// How long a connect may take.
        public var connectTimeout: Duration = .seconds(1)
        /// How long one command (or one pipelined batch's reply) may take.
        public var commandTimeout: Duration = .seconds(1)
        /// Reply bytes a pipeline keeps in flight per connection, a sliding window (0: send every
        /// command of a pipeline at once). Small values go many per round trip; values as large
        /// as the window go one at a time, instead of Redis copying them all into its output
        /// buffers before it writes the first.
        public var pipelineWindowBytes = 4 << 20
        public init() {}
    }

    /// One command: its arguments, and which of them is the key that routes it.
    public struct Command: Sendable {
        public var arguments: [[UInt8]]
        /// Index of the key in `arguments`; `nil` for a keyless command (sent to the first node).
        public var keyIndex: Int?
        public init(_ arguments: [[UInt8]], keyIndex: Int? = 1) {
            self.arguments = arguments
            self.keyIndex = keyIndex
        }
        public init(_ words: String...) {
            self.init(words.map { Array($0.utf8) }, keyIndex: words.count > 1 ? 1 : nil)
        }
    }

    /// The URLs' first server (credentials for every node).
    public let seeds: [RedisEndpoint]
    public let options: Options
    /// Whether the servers form a Redis Cluster (asked with `CLUSTER SLOTS` at connect).
    public var isCluster: Bool { lock.withLock { clusterMode } }
    private var clusterMode = false

    private let lock = NSLock()
    private var connections: [RedisEndpoint: RedisConnection] = [:]
    /// Slot → node, for a cluster.
    private var slotOwner: [RedisEndpoint?] = []
    /// Redirects followed since the client was made (`MOVED` and `ASK`).
    public var redirects: Int { lock.withLock { redirectCount } }
    private var redirectCount = 0

    /// Connects to the first reachable seed and learns whether it is a cluster.
    /// - Parameter urls: `redis://[user:password@]host:port`, one server or several cluster seeds.
    /// - Throws: ``RemoteError`` when no seed answers (the first seed's error).
    public init(urls: [String], options: Options = Options()) throws {
        guard !urls.isEmpty else { throw RemoteError.badURL("", reason: "no URL given") }
        seeds = try urls.map { try RedisEndpoint(url: $0) }
        self.options = options
        try lock.withLock { try connectSeeds() }
    }

    private func connectSeeds() throws {
        var firstError: Error?
        for seed in seeds {
            do {
                let c = try connection(seed)
                let reply = try c.run([[Array("CLUSTER".utf8), Array("SLOTS".utf8)]], operation: "CLUSTER SLOTS")[0]
                if case let .error(m) = reply {
                    // "ERR This instance has cluster support disabled", or CLUSTER not allowed to this user.
                    guard seeds.count == 1 else {
                        throw RemoteError.cluster(
                            "several URLs name the seeds of a cluster, but \(seed) answers CLUSTER SLOTS with: \(m)")
                    }
                    clusterMode = false
                    return
                }
                clusterMode = true
                try applySlots(reply, from: seed)
                return
            } catch {
                drop(seed)
                if firstError == nil { firstError = error }
            }
        }
        throw firstError!
    }

    private func connection(_ e: RedisEndpoint) throws -> RedisConnection {
        if let c = connections[e] { return c }
        let c = try RedisConnection(
            e, connectTimeout: options.connectTimeout, commandTimeout: options.commandTimeout,
            windowBytes: options.pipelineWindowBytes)
        connections[e] = c
        return c
    }

    private func drop(_ e: RedisEndpoint) { connections[e] = nil }

    /// Drops every connection; the next call reconnects.
    public func disconnect() { lock.withLock { connections.removeAll() } }

    /// Reads `CLUSTER SLOTS`: `[[start, end, [host, port, id], replicas...], ...]`.
    private func applySlots(_ reply: RedisReply, from seed: RedisEndpoint) throws {
        guard case let .array(ranges) = reply else {
            throw RemoteError.cluster("CLUSTER SLOTS from \(seed) answered \(reply)")
        }
        var owner = [RedisEndpoint?](repeating: nil, count: HashSlot.count)
        for r in ranges {
            guard case let .array(f) = r, f.count >= 3, let lo = f[0].int, let hi = f[1].int, lo >= 0,
                hi < HashSlot.count,
                lo <= hi, case let .array(node) = f[2], node.count >= 2, let host = node[0].text, let port = node[1].int
            else {
                throw RemoteError.cluster("CLUSTER SLOTS from \(seed) has an entry it cannot read: \(r)")
            }
            let e = seed.moved(host: host.isEmpty ? seed.host : host, port: port)
            for s in lo ... hi { owner[s] = e }
        }
        slotOwner = owner
    }

    /// Asks any reachable node for the slot map again.
    private func refreshSlots() throws {
        var candidates = Set(slotOwner.compactMap { $0 }).sorted { $0.description < $1.description }
        candidates += seeds
        var lastError: Error = RemoteError.cluster("no node to ask for the slot map")
        for e in candidates {
            do {
                let reply = try connection(e).run(
                    [[Array("CLUSTER".utf8), Array("SLOTS".utf8)]], operation: "CLUSTER SLOTS")[0]
                try applySlots(reply, from: e)
                return
            } catch {
                drop(e)
                lastError = error
            }
        }
        throw lastError
    }

    private func target(_ c: Command) throws -> RedisEndpoint {
        guard clusterMode else { return seeds[0] }
        guard let k = c.keyIndex else { return slotOwner.lazy.compactMap { $0 }.first ?? seeds[0] }
        let slot = HashSlot.of(c.arguments[k])
        guard let e = slotOwner[slot] else {
            throw RemoteError.cluster("no node serves slot \(slot); is the cluster complete (CLUSTER INFO)?")
        }
        return e
    }

    /// Runs `commands` pipelined (one round trip per node they route to); replies in the same order.
    ///
    /// A command's own error (wrong type, OOM) comes back as ``RedisReply/error(_:)``;
    /// redirects are followed. A failed connection throws, and that connection is dropped
    /// so the next call reconnects.
    /// - Throws: ``RemoteError``.
    public func pipeline(_ commands: [Command]) throws -> [RedisReply] { try pipeline(commands, each: nil) }

    /// As ``pipeline(_:)``, handing each final reply to `each` (with its command's index) as soon
    /// as it is read, so work on early replies overlaps the transfer of later ones. Across the
    /// nodes of a cluster the indices come in node order, not command order.
    public func pipeline(_ commands: [Command], each: ((Int, RedisReply) -> Void)?) throws -> [RedisReply] {
        try execute(commands, keep: true, each: each).map { $0! }
    }

    /// As ``pipeline(_:each:)``, but keeps no reply: each is handed to `each` and dropped, so
    /// a pipeline of large values holds one value at a time, not all of them.
    public func stream(_ commands: [Command], each: (Int, RedisReply) -> Void) throws {
        try withoutActuallyEscaping(each) { each in _ = try execute(commands, keep: false, each: each) }
    }

    /// Runs the pipeline; the replies are kept only with `keep` (`nil` otherwise).
    private func execute(_ commands: [Command], keep: Bool, each: ((Int, RedisReply) -> Void)?) throws -> [RedisReply?] {
        try lock.withLock {
            if clusterMode && slotOwner.isEmpty { try refreshSlots() }
            var results = [RedisReply?](repeating: nil, count: keep ? commands.count : 0)
            // (command index, node, asking)
            var pending: [(Int, RedisEndpoint, Bool)] = try commands.indices.map {
                ($0, try target(commands[$0]), false)
            }
            var round = 0
            while !pending.isEmpty {
                round += 1
                guard round <= 6 else {
                    throw RemoteError.cluster(
                        "\(pending.count) commands still redirected after 5 tries (a resharding in progress?)")
                }
                var retry: [(Int, RedisEndpoint, Bool)] = []
                var needRefresh = false
                var order: [RedisEndpoint] = []
                var groups: [RedisEndpoint: [(Int, Bool)]] = [:]
                for (i, e, asking) in pending {
                    if groups[e] == nil { order.append(e) }
                    groups[e, default: []].append((i, asking))
                }
                for e in order {
                    let group = groups[e]!
                    var batch: [[[UInt8]]] = []
                    for (i, asking) in group {
                        if asking { batch.append([Array("ASKING".utf8)]) }
                        batch.append(commands[i].arguments)
                    }
                    // Which command each reply of the batch answers (nil: ASKING's +OK).
                    var answers: [(Int, Bool)?] = []
                    for (i, asking) in group {
                        if asking { answers.append(nil) }
                        answers.append((i, asking))
                    }
                    do {
                        try connection(e).run(batch, operation: "a pipeline of \(batch.count) commands") { k, reply in
                            guard let (i, asking) = answers[k] else { return }
                            if case let .error(m) = reply, clusterMode, let (kind, to) = redirect(m, from: e) {
                                redirectCount += 1
                                if kind == "MOVED" {
                                    needRefresh = true
                                    retry.append((i, to, false))
                                } else {
                                    retry.append((i, to, true))
                                }
                                return
                            }
                            if case let .error(m) = reply, clusterMode, m.hasPrefix("TRYAGAIN") {
                                retry.append((i, e, asking))
                                return
                            }
                            if keep { results[i] = reply }
                            each?(i, reply)
                        }
                    } catch {
                        drop(e)
                        if clusterMode { slotOwner = [] }  // re-learn the map when reconnecting
                        throw error
                    }
                }
                if needRefresh { try refreshSlots() }
                if !retry.isEmpty && retry.allSatisfy({ !$0.2 }) && !needRefresh { Thread.sleep(forTimeInterval: 0.01) }
                pending = retry
            }
            return results
        }
    }

    /// Parses `MOVED 3999 127.0.0.1:6381` or `ASK 3999 127.0.0.1:6381`.
    private func redirect(_ message: String, from e: RedisEndpoint) -> (String, RedisEndpoint)? {
        let parts = message.split(separator: " ")
        guard parts.count == 3, parts[0] == "MOVED" || parts[0] == "ASK", let colon = parts[2].lastIndex(of: ":"),
            let port = Int(parts[2][parts[2].index(after: colon)...])
        else { return nil }
        let host = String(parts[2][..<colon])
        return (String(parts[0]), e.moved(host: host.isEmpty ? e.host : host, port: port))
    }

    // MARK: conveniences

    /// One command; a Redis error reply throws.
    @discardableResult
    public func command(_ c: Command) throws -> RedisReply {
        let r = try pipeline([c])[0]
        if let m = r.errorMessage {
            throw RemoteError.server(endpoint: seeds.map(\.description).joined(separator: ","), message: m)
        }
        return r
    }

    /// `GET` of every key, pipelined; `nil` where a key is absent.
    public func get(_ keys: [[UInt8]]) throws -> [[UInt8]?] {
        try check(pipeline(keys.map { Command([Array("GET".utf8), $0]) })).map(\.bytes)
    }

    /// `GET` of every key, pipelined, each value handed to `each` as soon as it is read (see
    /// ``pipeline(_:each:)``); also returns them in order.
    public func get(_ keys: [[UInt8]], each: (Int, [UInt8]?) -> Void) throws -> [[UInt8]?] {
        try withoutActuallyEscaping(each) { each in
            try check(pipeline(keys.map { Command([Array("GET".utf8), $0]) }) { each($0, $1.bytes) }).map(\.bytes)
        }
    }

    /// `GET` of every key, pipelined, each value handed to `each` as it is read and then
    /// dropped (see ``stream(_:each:)``); `nil` where a key is absent.
    /// - Throws: ``RemoteError``; a Redis error reply throws after the pipeline is read.
    public func streamGet(_ keys: [[UInt8]], each: (Int, [UInt8]?) -> Void) throws {
        var failure: String?
        try stream(keys.map { Command([Array("GET".utf8), $0]) }) { i, reply in
            if let m = reply.errorMessage {
                if failure == nil { failure = m }
            } else {
                each(i, reply.bytes)
            }
        }
        if let failure { throw RemoteError.server(endpoint: seeds[0].description, message: failure) }
    }

    /// `EXISTS` of every key, pipelined.
    public func exists(_ keys: [[UInt8]]) throws -> [Bool] {
        try check(pipeline(keys.map { Command([Array("EXISTS".utf8), $0]) })).map { ($0.int ?? 0) > 0 }
    }

    /// `SET key value NX` of every pair, pipelined; `true` where the value was set (the key was absent).
    public func setIfAbsent(_ pairs: [([UInt8], [UInt8])]) throws -> [Bool] {
        try check(pipeline(pairs.map { Command([Array("SET".utf8), $0.0, $0.1, Array("NX".utf8)]) })).map {
            $0 == .status("OK")
        }
    }

    private func check(_ replies: [RedisReply]) throws -> [RedisReply] {
        if let m = replies.lazy.compactMap(\.errorMessage).first {
            throw RemoteError.server(endpoint: seeds[0].description, message: m)
        }
        return replies
    }
}

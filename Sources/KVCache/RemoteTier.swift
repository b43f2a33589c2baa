import Foundation
import WStoreRemote

/// Where a KV store's remote tier lives and how it behaves: a Redis server or cluster shared by
/// engine nodes, under the same chained prefix keys as the local tier (format-spec/KV.md §5).
public struct RemoteTierOptions: Sendable {
    /// `redis://[user:password@]host:port`: one server, or several seeds of one Redis Cluster.
    public var urls: [String]
    /// Prefix of every Redis key, so deployments can share one Redis.
    public var namespace = "wstore:kv:"
    /// How long a connect, and a pipelined command batch, may take before the tier counts an
    /// error and lookups go on from the local tier alone.
    public var timeout: Duration = .milliseconds(500)
    /// Most chunks waiting to be sent; a store that finds the queue full drops its chunks (counted).
    public var queueChunks = 512
    /// Most bytes waiting to be sent.
    public var queueBytes = 512 << 20
    /// First wait before reconnecting after a failure; doubled on each failed try.
    public var retryInitial: Duration = .milliseconds(100)
    /// Longest wait between reconnect tries.
    public var retryMax: Duration = .seconds(5)
    /// Print a one-line warning to stderr when the tier goes down.
    public var warnings = true
    /// Reply bytes the tier's pipelines (a lookup's `GET`s, the writer's `EXISTS`) keep in flight
    /// (``RedisClient/Options/pipelineWindowBytes``).
    public var pipelineWindowBytes = RedisClient.Options().pipelineWindowBytes

    public init(urls: [String]) { self.urls = urls }

    /// Checks that there is at least one URL and each is `redis://[user:password@]host:port`.
    /// - Throws: ``WStoreError/invalidArgument(_:)`` naming the first that is not.
    public func validate() throws {
        guard !urls.isEmpty else { throw WStoreError.invalidArgument("no Redis URL given for the remote tier") }
        for u in urls {
            do { _ = try RedisEndpoint(url: u) } catch { throw WStoreError.invalidArgument("\(error)") }
        }
    }
}

/// Counters of a KV store's tiers since it was opened (``KVStore/tierStats()``).
public struct KVTierStats: Sendable, Equatable, Codable {
    /// Chunks that lookups found in the local tier.
    public var localHitChunks = 0
    /// Chunks that lookups found in the remote tier (after the local prefix ended).
    public var remoteHitChunks = 0
    /// Lookups made.
    public var lookups = 0
    /// Value bytes received from the remote tier.
    public var bytesFetched = 0
    /// Value bytes sent to the remote tier.
    public var bytesSent = 0
    /// Chunks the remote tier accepted.
    public var sentChunks = 0
    /// Chunks not sent because the remote tier already held them.
    public var alreadyRemote = 0
    /// Failed connects and failed command batches (timeouts, refused, lost connections, server errors).
    public var remoteErrors = 0
    /// Remote values that failed validation (damaged, foreign, wrong size): each a miss, never returned.
    public var damagedRemote = 0
    /// Chunks dropped because the send queue was full.
    public var queueDrops = 0
    /// Chunks dropped because the remote tier was down when their turn came.
    public var unsentChunks = 0
    /// Successful connects after the tier was down (or unreachable at open).
    public var reconnects = 0
    /// Chunks waiting in the send queue.
    public var queued = 0
    /// Whether the last remote operation succeeded.
    public var connected = false
    /// The last remote error, one line.
    public var lastError: String?
}

/// The remote tier of one open KV store: a reader link for lookups, a writer link and a
/// bounded queue drained by one background thread for stores.
final class RemoteTier: @unchecked Sendable {
    let options: RemoteTierOptions
    private let lock = NSLock()
    private let wake = NSCondition()
    private var stats = KVTierStats()
    private var queue: [(key: UInt64, value: [UInt8])] = []
    private var queueHead = 0
    private var queuedBytes = 0
    private var sending = false
    private var stopped = false
    private let reader: Link, writer: Link

    init(options: RemoteTierOptions) {
        self.options = options
        var client = RedisClient.Options()
        client.connectTimeout = options.timeout
        client.commandTimeout = options.timeout
        client.pipelineWindowBytes = options.pipelineWindowBytes
        reader = Link(options: options, client: client)
        writer = Link(options: options, client: client)
        reader.tier = self
        writer.tier = self
        // Connect now so an unreachable server is reported at open; lookups retry with backoff.
        _ = reader.use { _ in () }
        let thread = Thread { [self] in self.drain() }
        thread.name = "wstore-kv-remote-writer"
        thread.start()
    }

    /// Stops the writer thread (chunks still queued are dropped and counted).
    func close() {
        wake.lock()
        stopped = true
        wake.broadcast()
        wake.unlock()
    }

    /// The Redis key of chunk `key`: the namespace, then the key as 16 lowercase hex digits.
    func redisKey(_ key: UInt64) -> [UInt8] { Array(options.namespace.utf8) + Array(hex(key).utf8) }

    func snapshot() -> KVTierStats {
        var s = lock.withLock { stats }
        s.queued = wake.withLock { queue.count - queueHead }
        return s
    }

    func count(_ change: (inout KVTierStats) -> Void) { lock.withLock { change(&stats) } }

    /// The leading run of `keys` the remote tier holds: one pipelined `EXISTS` round trip over
    /// all of them, then one pipelined `GET` of the run. `each` receives every value (with its
    /// index in `keys`) as soon as it arrives. Returns the run's length, and its values when
    /// `keep` is set (otherwise each value is dropped after `each`, so a long run is never
    /// held in memory at once). Empty when the tier is down.
    func fetchRun(_ keys: ArraySlice<UInt64>, keep: Bool, each: (Int, [UInt8]) -> Void = { _, _ in })
        -> (count: Int, values: [[UInt8]])
    {
        guard !keys.isEmpty else { return (0, []) }
        let rk = keys.map(redisKey)
        var bytes = 0
        let run: (count: Int, values: [[UInt8]]) =
            reader.use { c in
                let present = try c.exists(rk)
                let n = present.firstIndex(of: false) ?? present.count
                guard n > 0 else { return (0, []) }
                // A key evicted between the probe and the fetch ends the run there. In a
                // cluster the values come in node order, so the run is known at the end.
                var arrived = [Bool](repeating: false, count: n)
                var kept = keep ? [[UInt8]](repeating: [], count: n) : []
                try c.streamGet(Array(rk.prefix(n))) { i, v in
                    guard let v else { return }
                    arrived[i] = true
                    bytes += v.count
                    if keep { kept[i] = v }
                    each(i, v)
                }
                let count = arrived.firstIndex(of: false) ?? n
                return (count, keep ? Array(kept.prefix(count)) : [])
            } ?? (0, [])
        count { $0.bytesFetched += bytes }
        return run
    }

    /// One pipelined `EXISTS` of `keys` on the reader link; `nil` when the tier is down.
    func readerExists(_ keys: [[UInt8]]) -> [Bool]? { reader.use { try $0.exists(keys) } }

    /// `used_memory`, `maxmemory` and `maxmemory_policy` from `INFO memory` (of the first node of a cluster).
    func serverMemory() -> (used: Int?, max: Int?, policy: String?)? {
        guard
            let text = reader.use({
                try $0.command(.init(["INFO", "memory"].map { Array($0.utf8) }, keyIndex: nil)).text
            })
                ?? nil
        else { return nil }
        var fields: [String: String] = [:]
        for line in text.split(whereSeparator: \.isNewline) {
            let parts = line.split(separator: ":", maxSplits: 1)
            if parts.count == 2 { fields[String(parts[0])] = String(parts[1]) }
        }
        return (
            fields["used_memory"].flatMap { Int($0) }, fields["maxmemory"].flatMap { Int($0) },
            fields["maxmemory_policy"]
        )
    }

    /// Queues chunks to send; never blocks. When the queue is full the chunks that do not fit are dropped and counted.
    func enqueue(_ items: [(key: UInt64, value: [UInt8])]) {
        guard !items.isEmpty else { return }
        var dropped = 0
        wake.withLock {
            for item in items {
                if stopped || queue.count - queueHead >= options.queueChunks
                    || queuedBytes + item.value.count > options.queueBytes
                {
                    dropped += 1
                    continue
                }
                queue.append(item)
                queuedBytes += item.value.count
            }
            wake.signal()
        }
        if dropped > 0 { count { $0.queueDrops += dropped } }
    }

    /// Waits until the queue is empty and nothing is being sent, or `timeout` passes; whether it emptied.
    @discardableResult
    func flush(timeout: Duration) -> Bool {
        let deadline = Date().addingTimeInterval(
            Double(timeout.components.seconds) + Double(timeout.components.attoseconds) / 1e18)
        wake.lock()
        defer { wake.unlock() }
        while queue.count > queueHead || sending {
            if !wake.wait(until: deadline) { return false }
        }
        return true
    }

    /// The writer thread: takes batches off the queue; per batch one pipelined `EXISTS`, then
    /// `SET key value NX` of the chunks the tier lacks.
    private func drain() {
        while true {
            wake.lock()
            while queue.count == queueHead && !stopped { wake.wait() }
            if stopped {
                let left = queue.count - queueHead
                queue = []
                queueHead = 0
                wake.broadcast()
                wake.unlock()
                if left > 0 { count { $0.unsentChunks += left } }
                return
            }
            var batch: [(key: UInt64, value: [UInt8])] = []
            var bytes = 0
            while queueHead < queue.count && batch.count < 64 && (batch.isEmpty || bytes < 64 << 20) {
                batch.append(queue[queueHead])
                bytes += queue[queueHead].value.count
                queueHead += 1
            }
            queuedBytes -= bytes
            if queueHead > 4096 && queueHead * 2 > queue.count {
                queue.removeFirst(queueHead)
                queueHead = 0
            }
            sending = true
            wake.unlock()
            let keys = batch.map { redisKey($0.key) }
            let result: (sent: Int, present: Int, bytes: Int)? = writer.use { c in
                let present = try c.exists(keys)
                let missing = batch.indices.filter { !present[$0] }
                let set = try c.setIfAbsent(missing.map { (keys[$0], batch[$0].value) })
                let sentBytes = missing.reduce(0) { $0 + batch[$1].value.count }
                let sent = set.filter { $0 }.count
                return (sent, batch.count - sent, sentBytes)
            }
            count { s in
                if let result {
                    s.sentChunks += result.sent
                    s.alreadyRemote += result.present
                    s.bytesSent += result.bytes
                } else {
                    s.unsentChunks += batch.count
                }
            }
            wake.withLock {
                sending = false
                wake.broadcast()
            }
        }
    }

    /// A lazily (re)connected client: after a failure, it is not tried again until a backoff has passed.
    final class Link: @unchecked Sendable {
        let options: RemoteTierOptions
        let clientOptions: RedisClient.Options
        weak var tier: RemoteTier?
        private let lock = NSLock()
        private var client: RedisClient?
        private var everConnected = false
        private var down = false
        private var nextTry = ContinuousClock.now
        private var backoff: Duration

        init(options: RemoteTierOptions, client: RedisClient.Options) {
            self.options = options
            clientOptions = client
            backoff = options.retryInitial
        }

        /// Runs `body` on a connected client; `nil` (with the error counted) when the tier is down or `body` fails.
        func use<R>(_ body: (RedisClient) throws -> R) -> R? {
            lock.withLock {
                if client == nil {
                    guard ContinuousClock.now >= nextTry else { return nil }
                    do {
                        client = try RedisClient(urls: options.urls, options: clientOptions)
                    } catch {
                        failed(error)
                        return nil
                    }
                }
                do {
                    let r = try body(client!)
                    succeeded()
                    return r
                } catch RemoteError.io {
                    // A connection the server closed (it restarted, or dropped idle clients):
                    // one fresh connection before counting a failure.
                    client = nil
                    do {
                        client = try RedisClient(urls: options.urls, options: clientOptions)
                        let r = try body(client!)
                        succeeded()
                        return r
                    } catch {
                        client = nil
                        failed(error)
                        return nil
                    }
                } catch {
                    client = nil
                    failed(error)
                    return nil
                }
            }
        }

        private func succeeded() {
            backoff = options.retryInitial
            let wasDown = down
            down = false
            let reconnected = wasDown
            everConnected = true
            tier?.count { s in
                s.connected = true
                if reconnected { s.reconnects += 1 }
            }
        }

        private func failed(_ error: Error) {
            if !down && options.warnings {
                let what = everConnected ? "went down" : "is unreachable"
                FileHandle.standardError.write(
                    Data(
                        "wstore: warning: the remote KV tier \(what) (\(error)); lookups and stores use the local tier only until it answers again\n"
                            .utf8))
            }
            down = true
            nextTry = ContinuousClock.now + backoff
            backoff = min(backoff * 2, options.retryMax)
            tier?.count { s in
                s.remoteErrors += 1
                s.connected = false
                s.lastError = "\(error)"
            }
        }
    }
}

/// Owns a ``RemoteTier`` for a ``KVStore``: stops its writer thread when the store goes away.
final class RemoteTierHandle: Sendable {
    let tier: RemoteTier
    init(_ options: RemoteTierOptions) { tier = RemoteTier(options: options) }
    deinit { tier.close() }
}

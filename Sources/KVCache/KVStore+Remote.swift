import Foundation
import WStoreCore

/// The remote tier's part of lookups and stores (format-spec/KV.md §5).
extension KVStore {
    /// Per-tier counters since this handle was opened; `nil` without a remote tier.
    public func tierStats() -> KVTierStats? { remote?.tier.snapshot() }

    /// Waits until every chunk queued for the remote tier has been sent (or dropped), at most `timeout`.
    /// Returns whether the queue emptied. Without a remote tier, returns `true`.
    @discardableResult
    public func flushRemote(timeout: Duration = .seconds(10)) -> Bool { remote?.tier.flush(timeout: timeout) ?? true }

    /// Whether the remote tier holds each of `keys` (one pipelined `EXISTS`); `nil` without a
    /// remote tier or while it is down.
    public func remoteHolds(_ keys: [UInt64]) -> [Bool]? {
        guard let tier = remote?.tier else { return nil }
        let rk = keys.map(tier.redisKey)
        return tier.readerExists(rk)
    }

    /// Where a lookup's remote chunks go: new tensors (``lookup(tokens:model:salt:)``), or
    /// straight into the caller's buffers (``lookup(tokens:model:salt:into:)``).
    enum RemoteTarget {
        /// Decode each chunk into tensors of its own; `shape` is the local prefix's, if any.
        case tensors(shape: Shape?)
        /// Decode chunk `j` of the continuation into `layers` from token (local chunks + `j`) × chunk tokens on.
        case buffers([KVLayerView])
    }

    /// What ``remoteContinuation(keys:localChunks:target:model:)`` delivered: the chunks
    /// found, and for ``RemoteTarget/tensors(shape:)`` their KV.
    struct RemoteRun {
        var chunks = 0
        var parts: [KVCacheData] = []
    }

    /// Continues a local prefix of `localChunks` chunks from the remote tier.
    ///
    /// The next keys are probed in one pipelined round trip and the leading run that exists is
    /// fetched; each value is decoded on a worker as soon as it arrives, while later ones are
    /// still on the wire, checking the header and every record checksum (all bound to the
    /// chunk's key, so a value stored under another key fails too). A chunk must hold
    /// ``Options/chunkTokens`` tokens of the same shape as the rest of the prefix: a value that
    /// fails is a miss (counted in ``KVTierStats/damagedRemote``) and ends the prefix. The
    /// chunks found are written into the local tier (its budget and eviction apply) unless the
    /// handle is read-only.
    ///
    /// With ``RemoteTarget/buffers(_:)`` the chunks are decoded straight into the caller's
    /// buffers (no intermediate tensors); rows past the chunks delivered may then hold
    /// unspecified bytes.
    /// - Throws: ``WStoreError/invalidArgument(_:)`` when the buffers do not match the first
    ///   chunk of a prefix that only the remote tier holds.
    func remoteContinuation(keys: [UInt64], localChunks: Int, target: RemoteTarget, model: String) throws -> RemoteRun {
        guard let tier = remote?.tier else { return RemoteRun() }
        defer {
            tier.count {
                $0.lookups += 1
                $0.localHitChunks += localChunks
            }
        }
        guard localChunks < keys.count else { return RemoteRun() }
        let decoded = DecodedChunks()
        let group = DispatchGroup()
        let start = localChunks, chunkTokens = options.chunkTokens
        let (found, values) = tier.fetchRun(keys[start...], keep: !readOnly) { j, value in
            let key = keys[start + j]
            DispatchQueue.global().async(group: group) {
                decoded.set(j, Self.decodeRemote(value, key: key, chunk: start + j, chunkTokens: chunkTokens, target))
            }
        }
        group.wait()
        var run = RemoteRun(), accepted: [[UInt8]] = [], rawBytes: [Int] = []
        var shape: Shape? = if case let .tensors(s) = target { s } else { nil }
        for j in 0 ..< found {
            let key = keys[start + j]
            let outcome: DecodedChunk
            do {
                guard let r = decoded.get(j) else { break }
                outcome = try r.get()
            } catch {
                tier.count {
                    $0.damagedRemote += 1
                    $0.lastError = "\(error)"
                }
                break
            }
            if case .otherShape = outcome {
                if j == 0 && start == 0, case .buffers = target {
                    throw WStoreError.invalidArgument("the buffers do not match the remote chunk's shape")
                }
            }
            var ok = true
            switch outcome {
            case .otherShape: ok = false
            case let .tensors(part):
                let s = Shape(part)
                if shape == nil { shape = s }
                ok = shape == s
                if ok {
                    run.parts.append(part)
                    rawBytes.append(part.byteCount)
                }
            case let .delivered(bytes): rawBytes.append(bytes)
            }
            guard ok else {
                tier.count {
                    $0.damagedRemote += 1
                    $0.lastError = "remote KV chunk \(hex(key)) holds KV of another shape; ignored"
                }
                break
            }
            run.chunks += 1
            if !readOnly { accepted.append(values[j]) }
        }
        tier.count { $0.remoteHitChunks += run.chunks }
        if !accepted.isEmpty && !readOnly {
            do {
                try adopt(keys: keys, from: localChunks, values: accepted, rawBytes: rawBytes, model: model)
            } catch {
                // The chunks are still delivered; the local tier just does not keep them.
                tier.count { $0.lastError = "keeping remote chunks locally failed: \(error)" }
            }
        }
        return run
    }

    /// What a worker made of one remote value.
    private enum DecodedChunk {
        case tensors(KVCacheData)
        /// Written into the buffers: this many raw KV bytes.
        case delivered(rawBytes: Int)
        /// Sound, but not of the caller's buffers' shape (nothing was written).
        case otherShape
    }

    /// Checks and decodes one remote value (chunk `chunk` of the prompt) for `target`.
    private static func decodeRemote(
        _ value: [UInt8], key: UInt64, chunk: Int, chunkTokens: Int, _ target: RemoteTarget
    ) -> Result<DecodedChunk, Error> {
        Result {
            try value.withUnsafeBytes { b in
                let name = "remote KV chunk \(hex(key))"
                let info = try KVChunk.info(b, key: key, name: name)
                // Only chunks bound to their key (version 2) are taken from a shared tier.
                guard info.version >= 2 else {
                    throw WStoreError.corruptRecord(name: name, reason: "a version-1 chunk, not bound to its key")
                }
                guard info.tokens == chunkTokens else {
                    throw WStoreError.corruptRecord(
                        name: name, reason: "holds \(info.tokens) tokens, not the store's \(chunkTokens)")
                }
                switch target {
                case .tensors:
                    return .tensors(try KVChunk.decode(b, key: key, name: name, threads: 1))
                case let .buffers(layers):
                    guard layers.count == info.layers,
                        layers.allSatisfy({
                            $0.dtype == info.dtype && $0.kvHeads == info.kvHeads && $0.headDim == info.headDim
                        })
                    else { return .otherShape }
                    for i in 0 ..< 2 * info.layers {
                        try KVChunk.decodeTensor(
                            b, info, i, key: key, name: name,
                            into: layers[i / 2].rows(i % 2, from: chunk * chunkTokens))
                    }
                    return .delivered(rawBytes: info.rawBytes)
                }
            }
        }
    }

    /// Writes chunks fetched from the remote tier into the local tier, under their parents.
    private func adopt(keys: [UInt64], from start: Int, values: [[UInt8]], rawBytes: [Int], model: String)
        throws
    {
        try write { txn in
            var counters = try Counters.read(txn, meta)
            var parent = start > 0 ? keys[start - 1] : 0
            for (j, value) in values.enumerated() {
                let key = keys[start + j]
                if try Node.read(txn, nodes, key) == nil {
                    try insert(
                        txn, key: key, parent: parent, depth: start + j, model: model, value: value,
                        counters: &counters, rawBytes: rawBytes[j])
                    _ = try evictToBudget(txn, counters: &counters)
                }
                parent = key
            }
            try counters.write(txn, meta)
        }
    }

    /// Queues the chunks a store wrote locally for the remote tier (never blocks).
    func sendToRemote(keys: [UInt64], encoded: [Int: [UInt8]]) {
        guard let tier = remote?.tier, !encoded.isEmpty else { return }
        tier.enqueue(encoded.keys.sorted().map { (keys[$0], encoded[$0]!) })
    }

    /// Chunks decoded by workers, by index.
    private final class DecodedChunks: @unchecked Sendable {
        private let lock = NSLock()
        private var results: [Int: Result<DecodedChunk, Error>] = [:]
        func set(_ i: Int, _ r: Result<DecodedChunk, Error>) { lock.withLock { results[i] = r } }
        func get(_ i: Int) -> Result<DecodedChunk, Error>? { lock.withLock { results[i] } }
    }

    /// What must agree between the chunks of one prefix.
    struct Shape: Equatable {
        var layers: Int, heads: Int, headDim: Int, dtype: DType
        init(_ kv: KVCacheData) {
            let t = kv.layers[0].keys
            layers = kv.layers.count
            heads = t.heads
            headDim = t.headDim
            dtype = t.dtype
        }
    }
}

/// What ``KVStore/inspectRemote()`` found.
public struct KVRemoteInspection: Sendable, Codable {
    /// Chunks the local tier holds.
    public var localChunks: Int
    /// Of those, the ones the remote tier holds too (`nil` when it could not be asked).
    public var alsoRemote: Int?
    /// The server's memory use, its `maxmemory` (0: none) and eviction policy (`INFO memory`).
    public var usedMemory: Int?, maxMemory: Int?, evictionPolicy: String?
    /// The tier's counters after the probe.
    public var stats: KVTierStats
}

extension KVStore {
    /// Asks the remote tier which of this store's chunks it holds, and how it evicts.
    /// `nil` without a remote tier.
    public func inspectRemote() throws -> KVRemoteInspection? {
        guard let tier = remote?.tier else { return nil }
        let keys: [UInt64] = try env.withRead { txn in
            var keys: [UInt64] = []
            try txn.scan(nodes, prefix: []) { k, _ in
                keys.append(UInt64(bigEndian: k.loadUnaligned(as: UInt64.self)))
                return true
            }
            return keys
        }
        var held: Int? = 0
        var i = 0
        while i < keys.count, held != nil {
            let batch = Array(keys[i ..< min(i + 1000, keys.count)])
            if let present = tier.readerExists(batch.map(tier.redisKey)) {
                held! += present.filter { $0 }.count
            } else {
                held = nil
            }
            i += 1000
        }
        let info = tier.serverMemory()
        return KVRemoteInspection(
            localChunks: keys.count, alsoRemote: held, usedMemory: info?.used, maxMemory: info?.max,
            evictionPolicy: info?.policy, stats: tier.snapshot())
    }
}

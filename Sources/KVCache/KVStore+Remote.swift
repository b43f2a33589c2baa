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

    /// Continues a local prefix of `local` chunks from the remote tier.
    ///
    /// The next keys are probed in one pipelined round trip and the leading run that exists is
    /// fetched; each value is fully decoded (header and record checksums, both bound to the
    /// chunk's key, so a value stored under another key fails too) and must hold
    /// ``Options/chunkTokens`` tokens of the same shape as the rest of the prefix: a value that
    /// fails is a miss (counted in ``KVTierStats/damagedRemote``) and ends the prefix. The chunks
    /// found are written into the local tier (its budget and eviction apply) unless the handle
    /// is read-only.
    func remoteContinuation(keys: [UInt64], localChunks: Int, localKV: KVCacheData?, model: String) -> [KVCacheData] {
        guard let tier = remote?.tier else { return [] }
        defer {
            tier.count {
                $0.lookups += 1
                $0.localHitChunks += localChunks
            }
        }
        guard localChunks < keys.count else { return [] }
        // Each chunk is decoded on a worker as soon as it arrives, while later ones are still
        // on the wire; the prefix is then walked in order.
        let decoded = DecodedChunks()
        let group = DispatchGroup()
        let start = localChunks
        let values = tier.fetchRun(keys[start...]) { i, value in
            let key = keys[start + i]
            DispatchQueue.global().async(group: group) {
                let r = Result {
                    try value.withUnsafeBytes { b in
                        let name = "remote KV chunk \(hex(key))"
                        // Only chunks bound to their key (version 2) are taken from a shared tier.
                        guard try KVChunk.info(b, key: key, name: name).version >= 2 else {
                            throw WStoreError.corruptRecord(
                                name: name, reason: "a version-1 chunk, not bound to its key")
                        }
                        return try KVChunk.decode(b, key: key, name: name, threads: 1)
                    }
                }
                decoded.set(i, r)
            }
        }
        group.wait()
        var parts: [KVCacheData] = [], accepted: [[UInt8]] = []
        var shape = localKV.map(Shape.init)
        for (i, value) in values.enumerated() {
            let key = keys[localChunks + i]
            let part: KVCacheData
            do {
                guard let r = decoded.get(i) else { break }
                part = try r.get()
            } catch {
                tier.count {
                    $0.damagedRemote += 1
                    $0.lastError = "\(error)"
                }
                break
            }
            let s = Shape(part)
            guard part.tokens == options.chunkTokens, shape == nil || shape == s else {
                tier.count {
                    $0.damagedRemote += 1
                    $0.lastError = "remote KV chunk \(hex(key)) holds \(part.tokens) tokens of another shape; ignored"
                }
                break
            }
            shape = s
            parts.append(part)
            accepted.append(value)
        }
        tier.count { $0.remoteHitChunks += parts.count }
        if !parts.isEmpty && !readOnly {
            do { try adopt(keys: keys, from: localChunks, values: accepted, parts: parts, model: model) } catch {
                // The chunks are still delivered; the local tier just does not keep them.
                tier.count { $0.lastError = "keeping remote chunks locally failed: \(error)" }
            }
        }
        return parts
    }

    /// Writes chunks fetched from the remote tier into the local tier, under their parents.
    private func adopt(keys: [UInt64], from start: Int, values: [[UInt8]], parts: [KVCacheData], model: String) throws {
        try env.write { txn in
            var counters = try Counters.read(txn, meta)
            var parent = start > 0 ? keys[start - 1] : 0
            for (j, value) in values.enumerated() {
                let key = keys[start + j]
                if try Node.read(txn, nodes, key) == nil {
                    try insert(
                        txn, key: key, parent: parent, depth: start + j, model: model, value: value,
                        counters: &counters, rawBytes: parts[j].byteCount)
                    _ = try evictToBudget(txn, counters: &counters)
                }
                parent = key
            }
            try counters.write(txn, meta)
        }
    }

    /// Writes `part` (one chunk's KV) into the caller's buffers `layers` from token `token` on.
    func deliver(_ part: KVCacheData, into layers: [KVLayerView], at token: Int) throws {
        guard part.layers.count == layers.count else {
            throw WStoreError.invalidArgument(
                "the buffers describe \(layers.count) layers; the remote chunk holds \(part.layers.count)")
        }
        for (l, view) in layers.enumerated() {
            for (kv, tensor) in [part.layers[l].keys, part.layers[l].values].enumerated() {
                guard tensor.dtype == view.dtype, tensor.heads == view.kvHeads, tensor.headDim == view.headDim else {
                    throw WStoreError.invalidArgument("the buffers do not match the remote chunk's shape")
                }
                let rows = view.rows(kv, from: token)
                let row = tensor.headDim * tensor.elementSize
                tensor.bytes.withUnsafeBytes { src in
                    for h in 0 ..< tensor.heads {
                        for t in 0 ..< tensor.tokens {
                            rows.row(head: h, token: t).copyMemory(
                                from: src.baseAddress! + (h * tensor.tokens + t) * row, byteCount: row)
                        }
                    }
                }
            }
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
        private var results: [Int: Result<KVCacheData, Error>] = [:]
        func set(_ i: Int, _ r: Result<KVCacheData, Error>) { lock.withLock { results[i] = r } }
        func get(_ i: Int) -> Result<KVCacheData, Error>? { lock.withLock { results[i] } }
    }

    /// What must agree between the chunks of one prefix.
    private struct Shape: Equatable {
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

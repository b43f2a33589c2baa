import CWStoreHeader
import Foundation
import KVCache
import WeightStore

let kvStores = HandleTable<KVStore>(.kv)

private func kvFrom(_ p: OpaquePointer?) throws -> KVStore {
    guard let kv = kvStores.lookup(try required(p, "kv")) else { throw ABIError.invalidHandle("kv") }
    return kv
}

/// The handle, model (NULL: "default") and salt (NULL: "") a store, probe or lookup names.
private func kvPrefix(_ kv: OpaquePointer?, _ model: UnsafePointer<CChar>?, _ salt: UnsafePointer<CChar>?) throws
    -> (KVStore, String, String)
{
    (
        try kvFrom(kv), model == nil ? WeightStore.defaultModel : try string(model, "model"),
        salt == nil ? "" : try string(salt, "salt")
    )
}

/// The codec of an `enum wstore_kv_codec` code.
private func kvCodec(_ code: Int32) throws -> KVCodec {
    guard code >= 0, code <= 255, let c = KVCodec(code: UInt8(code)) else {
        throw ABIError.invalidArgument("unknown KV codec \(code); known: 0 lossless, 1 raw, 2 int2, 4 int4, 8 int8")
    }
    return c
}

/// The token ids a C call passes.
private func tokenIDs(_ p: UnsafePointer<UInt32>?, _ n: Int) throws -> [UInt32] {
    guard n >= 0 else { throw ABIError.invalidArgument("n_tokens \(n) is negative") }
    guard n == 0 || p != nil else { throw ABIError.invalidArgument("tokens is NULL") }
    return Array(UnsafeBufferPointer(start: p, count: n))
}

/// The caller's layer descriptions as views, checked.
private func layerViews(_ p: UnsafePointer<wstore_kv_layer>?, _ n: Int) throws -> [KVLayerView] {
    guard n > 0, let p else { throw ABIError.invalidArgument("layers is NULL or n_layers is 0") }
    return try (0 ..< n).map { i in
        let l = p[i]
        guard let k = l.k, let v = l.v else { throw ABIError.invalidArgument("layer \(i): k or v is NULL") }
        guard l.dtype >= 0, l.dtype <= 255, let dtype = DType(code: UInt8(l.dtype), ggmlType: 0),
            [DType.f16, .bf16, .f32].contains(dtype)
        else {
            throw ABIError.invalidArgument("layer \(i): dtype \(l.dtype) is not WSTORE_DTYPE_F16, BF16 or F32")
        }
        guard l.kv_heads > 0, l.head_dim > 0, l.token_stride > 0, l.head_stride >= 0 else {
            throw ABIError.invalidArgument(
                "layer \(i): kv_heads, head_dim and token_stride must be positive, head_stride not negative")
        }
        return KVLayerView(
            keys: k, values: v, dtype: dtype, kvHeads: Int(l.kv_heads), headDim: Int(l.head_dim),
            tokenStride: Int(l.token_stride), headStride: Int(l.head_stride))
    }
}

/// The settings a C call passes (NULL: every default).
private func kvOptions(_ options: UnsafePointer<wstore_kv_options>?) throws -> KVStore.Options {
    var o = KVStore.Options()
    if let c = options?.pointee {
        if c.chunk_tokens != 0 { o.chunkTokens = Int(c.chunk_tokens) }
        o.budgetBytes = Int(c.budget_bytes)
        o.maxChunks = Int(c.max_chunks)
        o.codec = try kvCodec(c.codec)
        o.threads = max(1, Int(c.threads))
        if c.kivi_group != 0 { o.kivi.group = Int(c.kivi_group) }
        o.kivi.residual = Int(c.kivi_residual)
    }
    return o
}

/// See `wstore_kv_create` in wstore.h.
@_cdecl("wstore_kv_create")
public func wstore_kv_create(
    _ path: UnsafePointer<CChar>?, _ options: UnsafePointer<wstore_kv_options>?,
    _ out: UnsafeMutablePointer<OpaquePointer?>?
) -> Int32 {
    guarded {
        let path = try string(path, "path")
        let out = try required(out, "out")
        out.pointee = try kvStores.insert(try KVStore.create(at: path, options: try kvOptions(options)))
    }
}

/// See `wstore_kv_open` in wstore.h.
@_cdecl("wstore_kv_open")
public func wstore_kv_open(
    _ path: UnsafePointer<CChar>?, _ readOnly: Int32, _ threads: Int32,
    _ out: UnsafeMutablePointer<OpaquePointer?>?
) -> Int32 {
    guarded {
        let path = try string(path, "path")
        let out = try required(out, "out")
        out.pointee = try kvStores.insert(
            try KVStore.open(at: path, readOnly: readOnly != 0, threads: max(1, Int(threads))))
    }
}

/// See `wstore_kv_close` in wstore.h.
@_cdecl("wstore_kv_close")
public func wstore_kv_close(_ kv: OpaquePointer?) -> Int32 {
    guard let kv else { return WSTORE_OK.rawValue }
    return guarded {
        guard let store = kvStores.remove(kv) else { throw ABIError.invalidHandle("kv") }
        try store.flushUseStamps()
        // A deferred handle syncs what it wrote, and reports it when that fails.
        try store.setDurability(.synced)
    }
}

/// See `wstore_kv_set_durability` in wstore.h.
@_cdecl("wstore_kv_set_durability")
public func wstore_kv_set_durability(_ kv: OpaquePointer?, _ durability: Int32) -> Int32 {
    guarded {
        let store = try kvFrom(kv)
        switch durability {
        case Int32(WSTORE_KV_SYNCED.rawValue): try store.setDurability(.synced)
        case Int32(WSTORE_KV_DEFERRED.rawValue): try store.setDurability(.deferred)
        default:
            throw ABIError.invalidArgument(
                "unknown durability \(durability); known: WSTORE_KV_SYNCED (0), WSTORE_KV_DEFERRED (1)")
        }
    }
}

/// See `wstore_kv_sync` in wstore.h.
@_cdecl("wstore_kv_sync")
public func wstore_kv_sync(_ kv: OpaquePointer?) -> Int32 {
    guarded { try kvFrom(kv).sync() }
}

/// See `wstore_kv_store` in wstore.h.
@_cdecl("wstore_kv_store")
public func wstore_kv_store(
    _ kv: OpaquePointer?, _ model: UnsafePointer<CChar>?, _ salt: UnsafePointer<CChar>?,
    _ tokens: UnsafePointer<UInt32>?, _ nTokens: Int, _ layers: UnsafePointer<wstore_kv_layer>?,
    _ nLayers: Int, _ cached: UnsafeMutablePointer<Int>?
) -> Int32 {
    guarded {
        let (store, m, s) = try kvPrefix(kv, model, salt)
        let ids = try tokenIDs(tokens, nTokens)
        let views = try layerViews(layers, nLayers)
        let (_, now) = try store.store(tokens: ids, model: m, salt: s, from: views)
        cached?.pointee = now
    }
}

/// See `wstore_kv_probe` in wstore.h.
@_cdecl("wstore_kv_probe")
public func wstore_kv_probe(
    _ kv: OpaquePointer?, _ model: UnsafePointer<CChar>?, _ salt: UnsafePointer<CChar>?,
    _ tokens: UnsafePointer<UInt32>?, _ nTokens: Int, _ cached: UnsafeMutablePointer<Int>?
) -> Int32 {
    guarded {
        let (store, m, s) = try kvPrefix(kv, model, salt)
        let out = try required(cached, "cached_tokens")
        out.pointee = try store.probe(tokens: try tokenIDs(tokens, nTokens), model: m, salt: s)
    }
}

/// See `wstore_kv_lookup` in wstore.h.
@_cdecl("wstore_kv_lookup")
public func wstore_kv_lookup(
    _ kv: OpaquePointer?, _ model: UnsafePointer<CChar>?, _ salt: UnsafePointer<CChar>?,
    _ tokens: UnsafePointer<UInt32>?, _ nTokens: Int, _ layers: UnsafePointer<wstore_kv_layer>?,
    _ nLayers: Int, _ out: UnsafeMutablePointer<wstore_kv_lookup_result>?
) -> Int32 {
    guarded {
        let (store, m, s) = try kvPrefix(kv, model, salt)
        let out = try required(out, "out")
        let ids = try tokenIDs(tokens, nTokens)
        let views = try layerViews(layers, nLayers)
        let d = try store.lookup(tokens: ids, model: m, salt: s, into: views)
        var r = wstore_kv_lookup_result()
        r.tokens = UInt64(d.tokens)
        r.chunks = UInt64(d.chunks)
        if let damage = d.damage {
            r.damaged = 1
            setLastError("the cached prefix ends after \(d.chunks) chunks at a damaged chunk: \(damage)")
        }
        out.pointee = r
    }
}

/// See `wstore_kv_get_stats` in wstore.h.
@_cdecl("wstore_kv_get_stats")
public func wstore_kv_get_stats(_ kv: OpaquePointer?, _ out: UnsafeMutablePointer<wstore_kv_stats>?) -> Int32 {
    guarded {
        let store = try kvFrom(kv)
        let out = try required(out, "out")
        let s = try store.stats()
        let c = store.lookupCounters()
        var r = wstore_kv_stats()
        r.chunks = UInt64(s.chunks)
        r.leaves = UInt64(s.leaves)
        r.stored_bytes = UInt64(s.storedBytes)
        r.raw_bytes = UInt64(s.rawBytes)
        r.chunk_tokens = Int64(store.options.chunkTokens)
        r.codec = Int32(store.options.codec.code)
        r.read_only = store.readOnly ? 1 : 0
        r.lookups = UInt64(c.lookups)
        r.lookup_tokens = UInt64(c.askedTokens)
        r.hit_tokens = UInt64(c.hitTokens)
        r.damaged_chunks = UInt64(c.damaged)
        out.pointee = r
    }
}

// MARK: the remote tier

/// The remote tier a C call describes, checked; `nil` for a NULL `remote`.
private func remoteTier(_ p: UnsafePointer<wstore_kv_remote>?) throws -> RemoteTierOptions? {
    guard let r = p?.pointee else { return nil }
    let urls = try string(r.urls, "remote->urls").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        .filter { !$0.isEmpty }
    var o = RemoteTierOptions(urls: urls)
    if r.key_namespace != nil { o.namespace = try string(r.key_namespace, "remote->key_namespace") }
    if r.timeout_ms > 0 { o.timeout = .milliseconds(r.timeout_ms) }
    if r.queue_chunks > 0 { o.queueChunks = Int(r.queue_chunks) }
    do { try o.validate() } catch let WStoreError.invalidArgument(why) { throw ABIError.invalidArgument(why) }
    return o
}

/// See `wstore_kv_create_remote` in wstore.h.
@_cdecl("wstore_kv_create_remote")
public func wstore_kv_create_remote(
    _ path: UnsafePointer<CChar>?, _ options: UnsafePointer<wstore_kv_options>?,
    _ remote: UnsafePointer<wstore_kv_remote>?,
    _ out: UnsafeMutablePointer<OpaquePointer?>?
) -> Int32 {
    guarded {
        let path = try string(path, "path")
        let out = try required(out, "out")
        out.pointee = try kvStores.insert(
            try KVStore.create(at: path, options: try kvOptions(options), remote: try remoteTier(remote)))
    }
}

/// See `wstore_kv_open_remote` in wstore.h.
@_cdecl("wstore_kv_open_remote")
public func wstore_kv_open_remote(
    _ path: UnsafePointer<CChar>?, _ readOnly: Int32, _ threads: Int32,
    _ remote: UnsafePointer<wstore_kv_remote>?,
    _ out: UnsafeMutablePointer<OpaquePointer?>?
) -> Int32 {
    guarded {
        let path = try string(path, "path")
        let out = try required(out, "out")
        let tier = try remoteTier(remote)
        out.pointee = try kvStores.insert(
            try KVStore.open(
                at: path, readOnly: readOnly != 0, threads: max(1, Int(threads)),
                remote: tier))
    }
}

/// See `wstore_kv_get_tier_stats` in wstore.h.
@_cdecl("wstore_kv_get_tier_stats")
public func wstore_kv_get_tier_stats(_ kv: OpaquePointer?, _ out: UnsafeMutablePointer<wstore_kv_tier_stats>?) -> Int32
{
    guarded {
        let store = try kvFrom(kv)
        let out = try required(out, "out")
        var r = wstore_kv_tier_stats()
        if let t = store.tierStats() {
            r.has_remote = 1
            r.connected = t.connected ? 1 : 0
            r.lookups = UInt64(t.lookups)
            r.local_hit_chunks = UInt64(t.localHitChunks)
            r.remote_hit_chunks = UInt64(t.remoteHitChunks)
            r.bytes_fetched = UInt64(t.bytesFetched)
            r.bytes_sent = UInt64(t.bytesSent)
            r.sent_chunks = UInt64(t.sentChunks)
            r.already_remote = UInt64(t.alreadyRemote)
            r.remote_errors = UInt64(t.remoteErrors)
            r.damaged_remote = UInt64(t.damagedRemote)
            r.queue_drops = UInt64(t.queueDrops)
            r.unsent_chunks = UInt64(t.unsentChunks)
            r.reconnects = UInt64(t.reconnects)
            r.queued = UInt64(t.queued)
        }
        out.pointee = r
    }
}

/// See `wstore_kv_flush_remote` in wstore.h.
@_cdecl("wstore_kv_flush_remote")
public func wstore_kv_flush_remote(_ kv: OpaquePointer?, _ timeoutMs: Int64, _ drained: UnsafeMutablePointer<Int32>?)
    -> Int32
{
    guarded {
        let store = try kvFrom(kv)
        let ok = store.flushRemote(timeout: .milliseconds(max(0, timeoutMs)))
        drained?.pointee = ok ? 1 : 0
    }
}

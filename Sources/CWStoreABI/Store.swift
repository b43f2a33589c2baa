import CWStoreHeader
import Synchronization
import WeightStore

/// What a `wstore_store *` handle names: the open store and the models it held at open
/// (for a NULL model and for errors that list the models).
final class StoreBox: Sendable {
    let store: WeightStore
    private let models: Mutex<[String]>

    init(_ store: WeightStore) throws {
        self.store = store
        models = Mutex(try store.models())
    }

    /// The model a C `model` argument names: the given name, or for NULL the store's only
    /// model (when it holds exactly one), else `default`.
    /// - Throws: ``WStoreError/notFound(_:)`` naming the models the store holds, when it
    ///   holds none by that name (the list is read again once before giving up).
    func model(_ p: UnsafePointer<CChar>?) throws -> String {
        let known = models.withLock { $0 }
        let name: String
        if let p {
            name = try string(p, "model")
        } else {
            name = known.count == 1 ? known[0] : WeightStore.defaultModel
        }
        if known.contains(name) { return name }
        let fresh = try store.models()
        models.withLock { $0 = fresh }
        if fresh.contains(name) { return name }
        let list = fresh.isEmpty ? "none" : fresh.joined(separator: ", ")
        throw WStoreError.notFound(
            "model \(name) (NULL names the only model of a one-model store, else \"default\"); the store holds: \(list)"
        )
    }
}

let stores = HandleTable<StoreBox>(.store)

/// The store behind a `wstore_store *` handle, borrowed for the call.
/// - Throws: ``ABIError/invalidArgument(_:)`` for NULL, ``ABIError/invalidHandle(_:)`` for a
///   handle that is closed or not a store handle.
func storeFrom(_ p: OpaquePointer?) throws -> StoreBox {
    guard let box = stores.lookup(try required(p, "store")) else { throw ABIError.invalidHandle("store") }
    return box
}

/// See `wstore_open` in wstore.h.
@_cdecl("wstore_open")
public func wstore_open(_ path: UnsafePointer<CChar>?, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    guarded {
        let path = try string(path, "path")
        let out = try required(out, "out")
        let store = try WeightStore.open(at: path, readOnly: true)
        out.pointee = try stores.insert(StoreBox(store))
    }
}

/// See `wstore_close` in wstore.h.
@_cdecl("wstore_close")
public func wstore_close(_ store: OpaquePointer?) -> Int32 {
    guard let store else { return WSTORE_OK.rawValue }
    return guarded { guard stores.remove(store) != nil else { throw ABIError.invalidHandle("store") } }
}

/// See `wstore_format_version` in wstore.h.
@_cdecl("wstore_format_version")
public func wstore_format_version(_ store: OpaquePointer?, _ out: UnsafeMutablePointer<Int32>?) -> Int32 {
    guarded {
        let s = try storeFrom(store).store
        let out = try required(out, "out")
        out.pointee = Int32(clamping: try s.metadata().formatVersion)
    }
}

/// See `wstore_model_info` in wstore.h.
@_cdecl("wstore_model_info")
public func wstore_model_info(
    _ store: OpaquePointer?, _ model: UnsafePointer<CChar>?,
    _ layers: UnsafeMutablePointer<Int64>?, _ expertsPerLayer: UnsafeMutablePointer<Int64>?,
    _ topK: UnsafeMutablePointer<Int64>?
) -> Int32 {
    guarded {
        let box = try storeFrom(store)
        let m = try box.model(model)
        guard let info = try box.store.modelInfo(m) else { throw WStoreError.notFound("model info of model \(m)") }
        layers?.pointee = Int64(info.layers ?? -1)
        expertsPerLayer?.pointee = Int64(info.expertsPerLayer ?? -1)
        topK?.pointee = Int64(info.topK ?? -1)
    }
}

/// See `wstore_list_models` in wstore.h.
@_cdecl("wstore_list_models")
public func wstore_list_models(_ store: OpaquePointer?, _ fn: wstore_model_fn?, _ ctx: UnsafeMutableRawPointer?)
    -> Int32
{
    guarded {
        let s = try storeFrom(store).store
        let fn = try required(fn, "callback")
        for name in try s.models() {
            let rc = name.withCString { fn($0, ctx) }
            if rc != 0 { throw ABIError.aborted(callback: "the model callback", returned: rc) }
        }
    }
}

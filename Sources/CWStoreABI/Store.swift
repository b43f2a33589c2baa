import CWStoreHeader
import WeightStore

// A `wstore_store *` is a retained WeightStore: wstore_open passes it retained,
// wstore_close releases it, and a residency manager holds its own reference.

/// The store behind a `wstore_store *` handle, borrowed for the call.
func storeFrom(_ p: OpaquePointer?) throws -> WeightStore {
    Unmanaged<WeightStore>.fromOpaque(UnsafeRawPointer(try required(p, "store"))).takeUnretainedValue()
}

/// See `wstore_open` in wstore.h.
@_cdecl("wstore_open")
public func wstore_open(_ path: UnsafePointer<CChar>?, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    guarded {
        let path = try string(path, "path")
        let out = try required(out, "out")
        let store = try WeightStore.open(at: path, readOnly: true)
        out.pointee = OpaquePointer(Unmanaged.passRetained(store).toOpaque())
    }
}

/// See `wstore_close` in wstore.h.
@_cdecl("wstore_close")
public func wstore_close(_ store: OpaquePointer?) {
    guard let store else { return }
    Unmanaged<WeightStore>.fromOpaque(UnsafeRawPointer(store)).release()
}

/// See `wstore_format_version` in wstore.h.
@_cdecl("wstore_format_version")
public func wstore_format_version(_ store: OpaquePointer?, _ out: UnsafeMutablePointer<Int32>?) -> Int32 {
    guarded {
        let s = try storeFrom(store)
        let out = try required(out, "out")
        out.pointee = Int32(clamping: try s.metadata().formatVersion)
    }
}

/// See `wstore_model_info` in wstore.h.
@_cdecl("wstore_model_info")
public func wstore_model_info(_ store: OpaquePointer?, _ model: UnsafePointer<CChar>?,
                              _ layers: UnsafeMutablePointer<Int64>?, _ expertsPerLayer: UnsafeMutablePointer<Int64>?,
                              _ topK: UnsafeMutablePointer<Int64>?) -> Int32 {
    guarded {
        let s = try storeFrom(store)
        let m = try modelName(model)
        guard let info = try s.modelInfo(m) else { throw WStoreError.notFound("model info of model \(m)") }
        layers?.pointee = Int64(info.layers ?? -1)
        expertsPerLayer?.pointee = Int64(info.expertsPerLayer ?? -1)
        topK?.pointee = Int64(info.topK ?? -1)
    }
}

/// See `wstore_list_models` in wstore.h.
@_cdecl("wstore_list_models")
public func wstore_list_models(_ store: OpaquePointer?, _ fn: wstore_model_fn?, _ ctx: UnsafeMutableRawPointer?) -> Int32 {
    guarded {
        let s = try storeFrom(store)
        let fn = try required(fn, "callback")
        for name in try s.models() {
            let rc = name.withCString { fn($0, ctx) }
            if rc != 0 { throw ABIError.aborted(callback: "the model callback", returned: rc) }
        }
    }
}

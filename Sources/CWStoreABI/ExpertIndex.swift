import CWStoreHeader
import WeightStore

/// See `wstore_list_experts` in wstore.h.
@_cdecl("wstore_list_experts")
public func wstore_list_experts(
    _ store: OpaquePointer?, _ model: UnsafePointer<CChar>?, _ layer: Int64,
    _ fn: wstore_expert_list_fn?, _ ctx: UnsafeMutableRawPointer?
) -> Int32 {
    guarded {
        let box = try storeFrom(store), s = box.store
        let m = try box.model(model)
        let fn = try required(fn, "callback")
        guard layer <= Int64(UInt32.max) else { throw ABIError.invalidArgument("layer \(layer) out of range") }
        for entry in try s.experts(model: m, layer: layer >= 0 ? Int(layer) : nil) {
            for part in entry.parts.keys.sorted() {
                let rc = part.withCString { p in
                    entry.parts[part]!.withCString { t in fn(Int64(entry.layer), Int64(entry.expert), p, t, ctx) }
                }
                if rc != 0 { throw ABIError.aborted(callback: "the expert callback", returned: rc) }
            }
        }
    }
}

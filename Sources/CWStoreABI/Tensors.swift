import CWStoreHeader
import WeightStore

/// `info` as the C struct.
func cInfo(_ info: TensorInfo) -> wstore_tensor_info {
    var c = wstore_tensor_info()
    c.dtype = Int32(info.dtype.code)
    if case .ggml(let t) = info.dtype { c.ggml_type = t }
    c.codec = Int32((info.isRaw ? WSTORE_CODEC_RAW : WSTORE_CODEC_ZSTD).rawValue)
    // Record.maxRank is WSTORE_MAX_RANK: a record header never holds more.
    precondition(info.shape.count <= Int(WSTORE_MAX_RANK), "rank \(info.shape.count) above WSTORE_MAX_RANK")
    c.rank = Int32(info.shape.count)
    withUnsafeMutableBytes(of: &c.shape) { raw in
        let dims = raw.bindMemory(to: Int64.self)
        for (i, d) in info.shape.enumerated() { dims[i] = Int64(d) }
    }
    c.raw_size = UInt64(info.rawSize)
    c.stored_size = UInt64(info.storedSize)
    c.checksum = info.checksum
    return c
}

/// See `wstore_info` in wstore.h.
@_cdecl("wstore_info")
public func wstore_info(
    _ store: OpaquePointer?, _ model: UnsafePointer<CChar>?, _ name: UnsafePointer<CChar>?,
    _ out: UnsafeMutablePointer<wstore_tensor_info>?
) -> Int32 {
    guarded {
        let box = try storeFrom(store), s = box.store
        let m = try box.model(model), n = try string(name, "name")
        let out = try required(out, "out")
        out.pointee = cInfo(try s.info(n, model: m))
    }
}

/// See `wstore_list_tensors` in wstore.h.
@_cdecl("wstore_list_tensors")
public func wstore_list_tensors(
    _ store: OpaquePointer?, _ model: UnsafePointer<CChar>?, _ fn: wstore_tensor_list_fn?,
    _ ctx: UnsafeMutableRawPointer?
) -> Int32 {
    guarded {
        let box = try storeFrom(store), s = box.store
        let m = try box.model(model)
        let fn = try required(fn, "callback")
        for info in try s.tensors(model: m) {
            var c = cInfo(info)
            let rc = info.name.withCString { fn($0, &c, ctx) }
            if rc != 0 { throw ABIError.aborted(callback: "the tensor callback", returned: rc) }
        }
    }
}

/// See `wstore_with_tensor` in wstore.h.
@_cdecl("wstore_with_tensor")
public func wstore_with_tensor(
    _ store: OpaquePointer?, _ model: UnsafePointer<CChar>?, _ name: UnsafePointer<CChar>?,
    _ flags: UInt32, _ fn: wstore_tensor_fn?, _ ctx: UnsafeMutableRawPointer?
) -> Int32 {
    guarded {
        let box = try storeFrom(store), s = box.store
        let m = try box.model(model), n = try string(name, "name")
        let fn = try required(fn, "callback")
        guard flags & ~WSTORE_VERIFY == 0 else {
            throw ABIError.invalidArgument("unknown flags 0x\(String(flags, radix: 16))")
        }
        // The bytes are pages of the read transaction withTensor holds open: they are lent
        // to the callback and never returned (lmdb.h: valid until the transaction ends).
        let rc = try s.withTensor(n, model: m, verify: flags & WSTORE_VERIFY != 0) { bytes, info in
            var c = cInfo(info)
            return fn(bytes.baseAddress, bytes.count, &c, ctx)
        }
        if rc != 0 { throw ABIError.aborted(callback: "the tensor callback", returned: rc) }
    }
}

/// See `wstore_read` in wstore.h.
@_cdecl("wstore_read")
public func wstore_read(
    _ store: OpaquePointer?, _ model: UnsafePointer<CChar>?, _ name: UnsafePointer<CChar>?,
    _ buf: UnsafeMutableRawPointer?, _ len: Int, _ threads: Int32
) -> Int32 {
    guarded {
        let box = try storeFrom(store), s = box.store
        let m = try box.model(model), n = try string(name, "name")
        try s.withSnapshot { snap in
            let info = try snap.info(n, model: m)
            guard len >= info.rawSize else {
                throw ABIError.bufferTooSmall(name: "tensor \(n) in model \(m)", needed: info.rawSize, given: len)
            }
            guard buf != nil || info.rawSize == 0 else { throw ABIError.invalidArgument("buf is NULL") }
            try snap.read(
                n, model: m, into: UnsafeMutableRawBufferPointer(start: buf, count: info.rawSize),
                threads: threads > 0 ? Int(threads) : defaultThreadCount, verify: true)
        }
    }
}

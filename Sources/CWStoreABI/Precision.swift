import CWStoreHeader
import WStoreCore
import WeightStore

/// The request of a `min_precision` and `flags` pair.
private func request(_ minPrecision: Int32, _ flags: UInt32) throws -> PrecisionRequest {
    guard flags & ~WSTORE_ACQUIRE_UPGRADE.rawValue == 0 else {
        throw ABIError.invalidArgument("unknown acquire flags 0x\(String(flags, radix: 16)); known: WSTORE_ACQUIRE_UPGRADE (1)")
    }
    let upgrade = flags & WSTORE_ACQUIRE_UPGRADE.rawValue != 0
    if minPrecision == WSTORE_PRECISION_ANY.rawValue { return .fastest(upgrade: upgrade) }
    guard let p = precisionFrom(code: minPrecision) else {
        throw ABIError.invalidArgument(
            "unknown precision \(minPrecision); use WSTORE_PRECISION_EXACT (0), _Q8_0 (1), _Q4_0 (2) or _ANY (-1)")
    }
    return p == .exact ? .exact : .atLeast(p, upgrade: upgrade)
}

/// The `enum wstore_precision` code of `p`.
func precisionCode(_ p: ExpertPrecision) -> Int32 {
    switch p {
    case .exact: WSTORE_PRECISION_EXACT.rawValue
    case .q8_0: WSTORE_PRECISION_Q8_0.rawValue
    case .q4_0: WSTORE_PRECISION_Q4_0.rawValue
    }
}

/// The precision of an `enum wstore_precision` code (not ANY); `nil` when unknown.
func precisionFrom(code: Int32) -> ExpertPrecision? {
    ExpertPrecision.allCases.first { precisionCode($0) == code }
}

/// See `wstore_expert_acquire_precision` in wstore.h.
@_cdecl("wstore_expert_acquire_precision")
public func wstore_expert_acquire_precision(
    _ residency: OpaquePointer?, _ layer: Int64, _ expert: Int64, _ minPrecision: Int32, _ flags: UInt32,
    _ out: UnsafeMutablePointer<OpaquePointer?>?
) -> Int32 {
    guarded {
        let out = try required(out, "out")
        let request = try request(minPrecision, flags)
        let box = try residencyFrom(residency)
        let (slot, hit) = try box.manager.acquireSlot(
            layer: Int(clamping: layer), expert: Int(clamping: expert), precision: request)
        out.pointee = try experts.insert(PinnedExpert.make(pinned: slot, hit: hit, owner: box))
    }
}

/// See `wstore_expert_acquire_many_precision` in wstore.h.
@_cdecl("wstore_expert_acquire_many_precision")
public func wstore_expert_acquire_many_precision(
    _ residency: OpaquePointer?, _ layer: Int64, _ list: UnsafePointer<Int64>?, _ count: Int,
    _ minPrecision: Int32, _ flags: UInt32, _ out: UnsafeMutablePointer<OpaquePointer?>?,
    _ hits: UnsafeMutablePointer<Int32>?
) -> Int32 {
    guarded {
        let request = try request(minPrecision, flags)
        try acquireMany(residency, layer, list, count, request, out, hits)
    }
}

/// See `wstore_expert_precision` in wstore.h.
@_cdecl("wstore_expert_precision")
public func wstore_expert_precision(_ expert: OpaquePointer?, _ precision: UnsafeMutablePointer<Int32>?) -> Int32 {
    guarded {
        let e = try expertFrom(expert)
        try required(precision, "precision").pointee = precisionCode(e.slot.precision)
    }
}

/// The layout entry of part `part` of a pinned expert.
private func part(_ e: PinnedExpert, _ part: UnsafePointer<CChar>?) throws -> ExpertLayout.Part {
    let name = try string(part, "part")
    guard let p = e.slot.layout.parts.first(where: { $0.name == name }) else {
        throw WStoreError.notFound("part \(name) of expert \(e.slot.expert) of layer \(e.slot.layer)")
    }
    return p
}

/// See `wstore_expert_part_blocks` in wstore.h.
@_cdecl("wstore_expert_part_blocks")
public func wstore_expert_part_blocks(
    _ expert: OpaquePointer?, _ name: UnsafePointer<CChar>?, _ out: UnsafeMutablePointer<wstore_part_blocks>?
) -> Int32 {
    guarded {
        let e = try expertFrom(expert)
        let p = try part(e, name)
        let out = try required(out, "out")
        var b = wstore_part_blocks()
        b.precision = precisionCode(p.precision)
        b.dtype = Int32(p.dtype.code)
        b.elements = Int64(p.elements)
        if case .ggml(let type) = p.dtype, p.precision != .exact, let (per, bytes) = p.dtype.blockLayout {
            b.ggml_type = type
            b.block_elements = Int32(per)
            b.block_bytes = Int32(bytes)
            b.scale_offset = 0
            b.scale_dtype = Int32(DType.f16.code)
            b.quant_offset = 2
            b.quant_bits = p.precision == .q8_0 ? 8 : 4
            b.quant_signed = p.precision == .q8_0 ? 1 : 0
            b.zero_point = p.precision == .q8_0 ? 0 : 8
            b.blocks = Int64(p.elements / per)
        }
        out.pointee = b
    }
}

/// See `wstore_expert_dequantize` in wstore.h.
@_cdecl("wstore_expert_dequantize")
public func wstore_expert_dequantize(
    _ expert: OpaquePointer?, _ name: UnsafePointer<CChar>?, _ dtype: Int32, _ out: UnsafeMutableRawPointer?,
    _ outSize: Int
) -> Int32 {
    guarded {
        let e = try expertFrom(expert)
        let p = try part(e, name)
        let out = try required(out, "out")
        guard let dt = DType(code: UInt8(clamping: max(0, dtype)), ggmlType: 0), dtype >= 0,
            [DType.f32, .f16, .bf16].contains(dt)
        else {
            throw ABIError.invalidArgument(
                "dequantize to dtype \(dtype): use WSTORE_DTYPE_F32 (11), WSTORE_DTYPE_F16 (9) or WSTORE_DTYPE_BF16 (10)")
        }
        let needed = p.elements * (dt == .f32 ? 4 : 2)
        guard outSize >= needed else {
            throw ABIError.bufferTooSmall(name: "part \(p.name) as \(dt)", needed: needed, given: outSize)
        }
        try p.dequantize(
            from: UnsafeRawPointer(e.slot.buffer.unsafelyUnwrapped),
            into: UnsafeMutableRawBufferPointer(start: out, count: needed), as: dt)
    }
}

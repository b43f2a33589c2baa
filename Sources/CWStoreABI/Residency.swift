import CWStoreHeader
import WeightStore
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What a `wstore_residency *` points at: the manager, and the part names of its experts
/// as C strings, shared by every handle it hands out.
///
/// Retained once by `wstore_residency_open` (released by `wstore_residency_close`) and once
/// by every live ``PinnedExpert``, so a handle's names stay valid after the close.
final class ResidencyBox {
    let manager: ResidencyManager
    private let partNames: [String: UnsafeMutablePointer<CChar>]

    init(manager: ResidencyManager, parts: Set<String>) {
        self.manager = manager
        self.partNames = Dictionary(uniqueKeysWithValues: parts.map { ($0, strdup($0)!) })
    }

    deinit { for p in partNames.values { free(p) } }

    /// The C string of part name `part` (every part name of the index has one).
    func cName(_ part: String) -> UnsafePointer<CChar> { UnsafePointer(partNames[part]!) }
}

/// What a `wstore_expert *` points at: one pin (the ``ExpertHandle``) and its parts as the
/// C array `wstore_expert_parts` lends. Releasing the object drops the pin.
final class PinnedExpert {
    let handle: ExpertHandle
    let owner: ResidencyBox
    let parts: UnsafeMutablePointer<wstore_expert_part>
    let count: Int

    init(_ handle: consuming ExpertHandle, owner: ResidencyBox) {
        let names = handle.parts
        count = names.count
        parts = .allocate(capacity: max(1, names.count))
        for (i, name) in names.enumerated() {
            let b = handle.bytes(part: name)!
            parts[i] = wstore_expert_part(name: owner.cName(name), data: b.baseAddress, size: b.count)
        }
        self.handle = handle
        self.owner = owner
    }

    deinit { parts.deallocate() }
}

private func residencyFrom(_ p: OpaquePointer?) throws -> ResidencyBox {
    Unmanaged<ResidencyBox>.fromOpaque(UnsafeRawPointer(try required(p, "residency"))).takeUnretainedValue()
}

private func expertFrom(_ p: OpaquePointer?) throws -> PinnedExpert {
    Unmanaged<PinnedExpert>.fromOpaque(UnsafeRawPointer(try required(p, "expert"))).takeUnretainedValue()
}

/// See `wstore_residency_open` in wstore.h.
@_cdecl("wstore_residency_open")
public func wstore_residency_open(_ store: OpaquePointer?, _ model: UnsafePointer<CChar>?, _ budget: Int64,
                                  _ policy: UnsafePointer<CChar>?, _ loaders: Int32, _ waitMs: Int64,
                                  _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    guarded {
        let s = try storeFrom(store)
        let m = try modelName(model)
        let out = try required(out, "out")
        guard budget >= 0 else { throw ABIError.invalidArgument("budget \(budget) is negative") }
        var options = ResidencyManager.Options()
        if policy != nil {
            let name = try string(policy, "policy")
            guard let kind = ResidencyPolicyKind(rawValue: name) else {
                let known = ResidencyPolicyKind.allCases.map(\.rawValue).joined(separator: ", ")
                throw ABIError.invalidArgument("unknown residency policy \"\(name)\"; known: \(known)")
            }
            options.policy = kind
        }
        if loaders > 0 { options.loaders = Int(loaders) }
        if waitMs == 0 { options.whenFull = .fail } else if waitMs > 0 { options.whenFull = .wait(timeout: .milliseconds(waitMs)) }
        let manager = try ResidencyManager(store: s, model: m, budget: Int(budget), options: options)
        let parts = Set(try s.experts(model: m).flatMap(\.parts.keys))
        out.pointee = OpaquePointer(Unmanaged.passRetained(ResidencyBox(manager: manager, parts: parts)).toOpaque())
    }
}

/// See `wstore_residency_close` in wstore.h.
@_cdecl("wstore_residency_close")
public func wstore_residency_close(_ residency: OpaquePointer?) {
    guard let residency else { return }
    Unmanaged<ResidencyBox>.fromOpaque(UnsafeRawPointer(residency)).release()
}

/// See `wstore_expert_acquire` in wstore.h.
@_cdecl("wstore_expert_acquire")
public func wstore_expert_acquire(_ residency: OpaquePointer?, _ layer: Int64, _ expert: Int64,
                                  _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    guarded {
        let box = try residencyFrom(residency)
        let out = try required(out, "out")
        let handle = try box.manager.acquire(layer: Int(layer), expert: Int(expert))
        out.pointee = OpaquePointer(Unmanaged.passRetained(PinnedExpert(handle, owner: box)).toOpaque())
    }
}

/// See `wstore_expert_parts` in wstore.h.
@_cdecl("wstore_expert_parts")
public func wstore_expert_parts(_ expert: OpaquePointer?, _ parts: UnsafeMutablePointer<UnsafePointer<wstore_expert_part>?>?,
                                _ count: UnsafeMutablePointer<Int>?) -> Int32 {
    guarded {
        let e = try expertFrom(expert)
        let parts = try required(parts, "parts"), count = try required(count, "count")
        parts.pointee = UnsafePointer(e.parts)
        count.pointee = e.count
    }
}

/// See `wstore_expert_part_by_name` in wstore.h.
@_cdecl("wstore_expert_part_by_name")
public func wstore_expert_part_by_name(_ expert: OpaquePointer?, _ part: UnsafePointer<CChar>?,
                               _ data: UnsafeMutablePointer<UnsafeRawPointer?>?, _ size: UnsafeMutablePointer<Int>?) -> Int32 {
    guarded {
        let e = try expertFrom(expert)
        let name = try string(part, "part")
        let data = try required(data, "data"), size = try required(size, "size")
        guard let b = e.handle.bytes(part: name) else {
            throw WStoreError.notFound("part \(name) of expert \(e.handle.expert) of layer \(e.handle.layer)")
        }
        data.pointee = b.baseAddress
        size.pointee = b.count
    }
}

/// See `wstore_expert_release` in wstore.h.
@_cdecl("wstore_expert_release")
public func wstore_expert_release(_ expert: OpaquePointer?) {
    guard let expert else { return }
    Unmanaged<PinnedExpert>.fromOpaque(UnsafeRawPointer(expert)).release()
}

/// See `wstore_residency_prefetch` in wstore.h.
@_cdecl("wstore_residency_prefetch")
public func wstore_residency_prefetch(_ residency: OpaquePointer?, _ layer: Int64, _ experts: UnsafePointer<Int64>?,
                                      _ count: Int) -> Int32 {
    guarded {
        let box = try residencyFrom(residency)
        guard count == 0 || experts != nil else { throw ABIError.invalidArgument("experts is NULL") }
        guard count >= 0 else { throw ABIError.invalidArgument("count \(count) is negative") }
        let list = UnsafeBufferPointer(start: experts, count: count)
        // Out-of-range numbers are unknown experts, which prefetch ignores.
        guard layer >= 0, layer < Int64(box.manager.geometry.layers) else { return }
        box.manager.prefetch(layer: Int(layer), experts: list.lazy.filter { $0 >= 0 && $0 < Int64(Int32.max) }.map { Int($0) })
    }
}

/// See `wstore_residency_get_stats` in wstore.h.
@_cdecl("wstore_residency_get_stats")
public func wstore_residency_get_stats(_ residency: OpaquePointer?, _ layer: Int64,
                                   _ out: UnsafeMutablePointer<wstore_residency_stats>?) -> Int32 {
    guarded {
        let box = try residencyFrom(residency)
        let out = try required(out, "out")
        let m = box.manager
        let stats = m.stats()
        guard layer < Int64(stats.layers.count) else {
            throw ABIError.invalidArgument("layer \(layer) out of range: the expert index has \(stats.layers.count) layers")
        }
        let l = layer >= 0 ? stats.layers[Int(layer)] : stats.total
        var c = wstore_residency_stats()
        c.demand_hits = UInt64(l.demandHits)
        c.demand_misses = UInt64(l.demandMisses)
        c.prefetch_hits = UInt64(l.prefetchHits)
        c.wasted_prefetches = UInt64(l.wastedPrefetches)
        c.demand_loads = UInt64(l.demandLoads)
        c.prefetch_loads = UInt64(l.prefetchLoads)
        c.bytes_loaded = UInt64(l.bytesLoaded)
        c.wait_ns = l.waitNanos
        c.coalesced_waits = UInt64(stats.coalescedWaits)
        c.dropped_prefetches = UInt64(stats.droppedPrefetches)
        c.evictions = UInt64(stats.evictions)
        c.resident_bytes = UInt64(stats.residentBytes)
        c.peak_resident_bytes = UInt64(stats.peakResidentBytes)
        c.budget = UInt64(stats.budget)
        c.expert_bytes = UInt64(m.expertBytes)
        c.layers = Int64(m.geometry.layers)
        c.experts_per_layer = Int64(m.geometry.experts)
        out.pointee = c
    }
}

import CWStoreHeader
import Synchronization
import WStoreCore
import WeightStore

/// What a `wstore_residency *` points at: the manager, the part names of its experts as C
/// strings, and per expert where its parts sit in its buffer, shared by every handle.
///
/// Retained once by `wstore_residency_open` (released by `wstore_residency_close`) and once
/// by every live ``PinnedExpert``, so a handle's names stay valid after the close.
///
/// `@unchecked Sendable`: `partNames` is behind a lock, and its C strings are never
/// written or freed before the box goes; each layout slot is an atomic that goes once from
/// nil to an immutable ``PartLayout`` (retained) and never changes again.
final class ResidencyBox: @unchecked Sendable {
    let manager: ResidencyManager
    private let partNames = Mutex<[String: UnsafeMutablePointer<CChar>]>([:])
    private let layouts: UnsafeMutablePointer<Atomic<UnsafeMutableRawPointer?>>

    init(manager: ResidencyManager) {
        self.manager = manager
        let n = manager.geometry.count
        layouts = .allocate(capacity: max(1, n))
        for i in 0 ..< n { (layouts + i).initialize(to: Atomic(nil)) }
    }

    deinit {
        for i in 0 ..< manager.geometry.count {
            if let p = layouts[i].load(ordering: .acquiring) { Unmanaged<PartLayout>.fromOpaque(p).release() }
        }
        layouts.deinitialize(count: manager.geometry.count)
        layouts.deallocate()
        partNames.withLock { for p in $0.values { Posix.freeCString(p) } }
    }

    /// Where the parts of `handle`'s expert sit in its buffer: learnt from the first handle
    /// of that expert (the layout of an expert never changes), then read lock-free.
    func layout(of handle: borrowing ExpertHandle) -> PartLayout {
        let id = manager.geometry.id(layer: handle.layer, expert: handle.expert)
        if let p = layouts[id].load(ordering: .acquiring) { return Unmanaged<PartLayout>.fromOpaque(p).takeUnretainedValue() }
        let base = handle.bytes.baseAddress!
        let names = handle.parts
        let cNames = partNames.withLock { table in
            names.map { name in
                if let p = table[name] { return UnsafePointer(p) }
                let p = Posix.duplicateCString(name)
                table[name] = p
                return UnsafePointer(p)
            }
        }
        let made = PartLayout(names: cNames,
                              offsets: names.map { handle.bytes(part: $0)!.baseAddress! - base },
                              sizes: names.map { handle.bytes(part: $0)!.count })
        let fresh = Unmanaged.passRetained(made).toOpaque()
        let (won, current) = layouts[id].compareExchange(expected: nil, desired: fresh, ordering: .acquiringAndReleasing)
        if won { return made }
        Unmanaged<PartLayout>.fromOpaque(fresh).release()
        return Unmanaged<PartLayout>.fromOpaque(current!).takeUnretainedValue()
    }
}

/// The parts of one expert: C names, and offsets and sizes in its resident buffer.
///
/// `@unchecked Sendable`: immutable; the names are C strings of the ``ResidencyBox``
/// that holds this layout, never written.
final class PartLayout: @unchecked Sendable {
    let names: [UnsafePointer<CChar>]
    let offsets: [Int]
    let sizes: [Int]

    init(names: [UnsafePointer<CChar>], offsets: [Int], sizes: [Int]) {
        self.names = names
        self.offsets = offsets
        self.sizes = sizes
    }
}

/// What a `wstore_expert *` points at: one pin (the ``ExpertHandle``) and its parts as the
/// C array `wstore_expert_parts` lends. Releasing the object drops the pin.
final class PinnedExpert {
    let handle: ExpertHandle
    let owner: ResidencyBox
    let parts: UnsafeMutablePointer<wstore_expert_part>
    let count: Int

    init(_ handle: consuming ExpertHandle, owner: ResidencyBox) {
        let layout = owner.layout(of: handle)
        let base = handle.bytes.baseAddress!
        count = layout.names.count
        parts = .allocate(capacity: max(1, count))
        for i in 0 ..< count {
            parts[i] = wstore_expert_part(name: layout.names[i], data: base + layout.offsets[i], size: layout.sizes[i])
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
        out.pointee = OpaquePointer(Unmanaged.passRetained(ResidencyBox(manager: manager)).toOpaque())
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
        let part = try required(part, "part")
        let data = try required(data, "data"), size = try required(size, "size")
        guard let p = UnsafeBufferPointer(start: e.parts, count: e.count).first(where: { Posix.equalCStrings($0.name, part) }) else {
            throw WStoreError.notFound("part \(String(cString: part)) of expert \(e.handle.expert) of layer \(e.handle.layer)")
        }
        data.pointee = p.data
        size.pointee = p.size
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

import CWStoreHeader
import WStoreCore
import WeightStore

/// What a `wstore_residency *` handle names: the manager, and per copy of each expert
/// (exact, and each low-bit variant) its parts as the C array a handle lends (names, offsets, dtypes and shapes from the manager's own
/// layouts, made once at open; only the data pointers differ per handle).
///
/// Referenced by the residency table until `wstore_residency_close` and by every live
/// ``PinnedExpert``, so a handle's names and shapes stay valid after the close.
///
/// `@unchecked Sendable`: everything is written in `init` and never again.
final class ResidencyBox: @unchecked Sendable {
    let manager: ResidencyManager
    /// Per expert id and precision (``copyIndex(_:_:)``): its parts with `data` as the
    /// offset into its buffer; nil when that copy is not stored.
    private let templates: [UnsafeMutableBufferPointer<wstore_expert_part>?]
    private var owned: [UnsafeMutableRawPointer] = []

    init(manager: ResidencyManager) {
        self.manager = manager
        var names: [String: UnsafeMutablePointer<CChar>] = [:]
        var owned: [UnsafeMutableRawPointer] = []
        var templates: [UnsafeMutableBufferPointer<wstore_expert_part>?] = []
        let g = manager.geometry
        precondition(ExpertPrecision.allCases == [.exact, .q8_0, .q4_0], "copyIndex lists every precision")
        for index in 0 ..< g.count * ExpertPrecision.allCases.count {
            let id = index / ExpertPrecision.allCases.count
            let precision = ExpertPrecision.allCases[index % ExpertPrecision.allCases.count]
            guard let layout = manager.layout(layer: id / g.experts, expert: id % g.experts, precision: precision)
            else {
                templates.append(nil)
                continue
            }
            let parts = UnsafeMutableBufferPointer<wstore_expert_part>.allocate(capacity: max(1, layout.parts.count))
            owned.append(UnsafeMutableRawPointer(parts.baseAddress!))
            for (i, p) in layout.parts.enumerated() {
                let name =
                    names[p.name]
                    ?? {
                        let c = Posix.duplicateCString(p.name)
                        names[p.name] = c
                        owned.append(UnsafeMutableRawPointer(c))
                        return c
                    }()
                let shape = UnsafeMutablePointer<Int64>.allocate(capacity: max(1, p.shape.count))
                owned.append(UnsafeMutableRawPointer(shape))
                for (d, n) in p.shape.enumerated() { shape[d] = Int64(n) }
                parts[i] = wstore_expert_part(
                    name: name, data: UnsafeRawPointer(bitPattern: p.offset),
                    size: p.size, dtype: Int32(p.dtype.code), rank: Int32(p.shape.count),
                    shape: shape)
            }
            templates.append(UnsafeMutableBufferPointer(rebasing: parts[0 ..< layout.parts.count]))
        }
        self.templates = templates
        self.owned = owned
    }

    deinit {
        // Names came from Posix.duplicateCString (malloc), everything else from allocate.
        let names = Set(templates.compactMap { $0 }.flatMap { $0.map { UnsafeMutableRawPointer(mutating: $0.name!) } })
        for p in owned { if names.contains(p) { Posix.freeCString(p) } else { p.deallocate() } }
    }

    /// The parts of copy `slot` with `data` as offsets into its buffer.
    @inline(__always)
    func template(of slot: ExpertSlot) -> UnsafeMutableBufferPointer<wstore_expert_part> {
        templates[Self.copyIndex(manager.geometry.id(layer: slot.layer, expert: slot.expert), slot.precision)]
            .unsafelyUnwrapped
    }

    /// The index of the copy of expert `id` at `precision` in the templates.
    @inline(__always) static func copyIndex(_ id: Int, _ precision: ExpertPrecision) -> Int {
        let p: Int
        switch precision {
        case .exact: p = 0
        case .q8_0: p = 1
        case .q4_0: p = 2
        }
        return id * 3 + p
    }
}

/// What a `wstore_expert *` handle names, in one allocation: one pin on an expert's slot
/// (dropped when the object goes) and its parts as the C array `wstore_expert_parts`
/// lends, tail-allocated after the header.
struct PinnedHeader {
    let slot: ExpertSlot
    let owner: ResidencyBox
    let hit: Bool
    let count: Int
}

final class PinnedExpert: ManagedBuffer<PinnedHeader, wstore_expert_part> {
    /// Takes over the pin already held on `slot`.
    static func make(pinned slot: ExpertSlot, hit: Bool, owner: ResidencyBox) -> PinnedExpert {
        let t = owner.template(of: slot)
        let made = unsafeDowncast(
            create(minimumCapacity: max(1, t.count)) { _ in
                PinnedHeader(slot: slot, owner: owner, hit: hit, count: t.count)
            }, to: PinnedExpert.self)
        // Only the data pointers differ from the template: the pinned buffer plus each offset.
        let base = UnsafeRawPointer(slot.buffer.unsafelyUnwrapped)
        made.withUnsafeMutablePointerToElements { out in
            for i in 0 ..< t.count {
                out[i] = t[i]
                out[i].data = base + Int(bitPattern: t[i].data)
            }
        }
        return made
    }

    // The header is read through its pointer: `header` itself is a class `var`, whose
    // every access is checked for exclusivity at run time.
    deinit { withUnsafeMutablePointerToHeader { $0.pointee.slot.unpin() } }

    var slot: ExpertSlot { withUnsafeMutablePointerToHeader { $0.pointee.slot } }
    var hit: Bool { withUnsafeMutablePointerToHeader { $0.pointee.hit } }
    var count: Int { withUnsafeMutablePointerToHeader { $0.pointee.count } }
    /// The parts array; valid while this object lives.
    var parts: UnsafeMutablePointer<wstore_expert_part> { withUnsafeMutablePointerToElements { $0 } }
}

let residencies = HandleTable<ResidencyBox>(.residency)
let experts = HandleTable<PinnedExpert>(.expert)

func residencyFrom(_ p: OpaquePointer?) throws -> ResidencyBox {
    guard let box = residencies.lookup(try required(p, "residency")) else { throw ABIError.invalidHandle("residency") }
    return box
}

func expertFrom(_ p: OpaquePointer?) throws -> PinnedExpert {
    guard let e = experts.lookup(try required(p, "expert")) else { throw ABIError.invalidHandle("expert") }
    return e
}

/// See `wstore_residency_open` in wstore.h.
@_cdecl("wstore_residency_open")
public func wstore_residency_open(
    _ store: OpaquePointer?, _ model: UnsafePointer<CChar>?, _ budget: Int64,
    _ policy: UnsafePointer<CChar>?, _ loaders: Int32, _ waitMs: Int64,
    _ out: UnsafeMutablePointer<OpaquePointer?>?
) -> Int32 {
    guarded {
        let box = try storeFrom(store)
        let m = try box.model(model)
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
        if waitMs == 0 {
            options.whenFull = .fail
        } else if waitMs > 0 {
            options.whenFull = .wait(timeout: .milliseconds(waitMs))
        }
        let manager = try ResidencyManager(store: box.store, model: m, budget: Int(budget), options: options)
        out.pointee = try residencies.insert(ResidencyBox(manager: manager))
    }
}

/// See `wstore_residency_close` in wstore.h.
@_cdecl("wstore_residency_close")
public func wstore_residency_close(_ residency: OpaquePointer?) -> Int32 {
    guard let residency else { return WSTORE_OK.rawValue }
    return guarded { guard residencies.remove(residency) != nil else { throw ABIError.invalidHandle("residency") } }
}

/// See `wstore_expert_acquire` in wstore.h.
@_cdecl("wstore_expert_acquire")
public func wstore_expert_acquire(
    _ residency: OpaquePointer?, _ layer: Int64, _ expert: Int64,
    _ out: UnsafeMutablePointer<OpaquePointer?>?
) -> Int32 {
    guarded {
        let out = try required(out, "out")
        // The hit path: the manager is borrowed from the table without a retain.
        let made: Void? = try residencies.withLive(try required(residency, "residency")) { box in
            let (slot, hit) = try box.manager.acquireSlot(layer: Int(clamping: layer), expert: Int(clamping: expert))
            out.pointee = try experts.insert(PinnedExpert.make(pinned: slot, hit: hit, owner: box))
        }
        guard made != nil else { throw ABIError.invalidHandle("residency") }
    }
}

/// See `wstore_expert_acquire_many` in wstore.h.
@_cdecl("wstore_expert_acquire_many")
public func wstore_expert_acquire_many(
    _ residency: OpaquePointer?, _ layer: Int64, _ list: UnsafePointer<Int64>?,
    _ count: Int, _ out: UnsafeMutablePointer<OpaquePointer?>?,
    _ hits: UnsafeMutablePointer<Int32>?
) -> Int32 {
    guarded { try acquireMany(residency, layer, list, count, .exact, out, hits) }
}

/// `wstore_expert_acquire_many` under a precision request.
func acquireMany(
    _ residency: OpaquePointer?, _ layer: Int64, _ list: UnsafePointer<Int64>?, _ count: Int,
    _ request: PrecisionRequest, _ out: UnsafeMutablePointer<OpaquePointer?>?, _ hits: UnsafeMutablePointer<Int32>?
) throws {
    let box = try residencyFrom(residency)
    guard count >= 0 else { throw ABIError.invalidArgument("count \(count) is negative") }
    guard count > 0 else { return }
    let list = try required(list, "experts"), out = try required(out, "out")
    let (slots, wasHit) = try box.manager.acquirePinned(
        layer: Int(clamping: layer),
        experts: UnsafeBufferPointer(start: list, count: count).map { Int(clamping: $0) }, precision: request)
    // Every pin is owned by an object first, so an early exit gives back the rest.
    let pinned = slots.enumerated().map { PinnedExpert.make(pinned: $1, hit: wasHit[$0], owner: box) }
    var made: [OpaquePointer] = []
    do {
        for e in pinned { made.append(try experts.insert(e)) }
    } catch {
        // All or none: give back the handles made so far.
        for h in made { _ = experts.remove(h) }
        throw error
    }
    for i in 0 ..< count {
        out[i] = made[i]
        hits?[i] = wasHit[i] ? 1 : 0
    }
}

/// See `wstore_expert_hit` in wstore.h.
@_cdecl("wstore_expert_hit")
public func wstore_expert_hit(_ expert: OpaquePointer?, _ hit: UnsafeMutablePointer<Int32>?) -> Int32 {
    guarded {
        let e = try expertFrom(expert)
        try required(hit, "hit").pointee = e.hit ? 1 : 0
    }
}

/// See `wstore_expert_parts` in wstore.h.
@_cdecl("wstore_expert_parts")
public func wstore_expert_parts(
    _ expert: OpaquePointer?, _ parts: UnsafeMutablePointer<UnsafePointer<wstore_expert_part>?>?,
    _ count: UnsafeMutablePointer<Int>?
) -> Int32 {
    guarded {
        let e = try expertFrom(expert)
        let parts = try required(parts, "parts"), count = try required(count, "count")
        parts.pointee = UnsafePointer(e.parts)
        count.pointee = e.count
    }
}

/// See `wstore_expert_part_by_name` in wstore.h.
@_cdecl("wstore_expert_part_by_name")
public func wstore_expert_part_by_name(
    _ expert: OpaquePointer?, _ part: UnsafePointer<CChar>?,
    _ data: UnsafeMutablePointer<UnsafeRawPointer?>?, _ size: UnsafeMutablePointer<Int>?
) -> Int32 {
    guarded {
        let e = try expertFrom(expert)
        let part = try required(part, "part")
        let data = try required(data, "data"), size = try required(size, "size")
        guard
            let p = UnsafeBufferPointer(start: e.parts, count: e.count).first(where: {
                Posix.equalCStrings($0.name, part)
            })
        else {
            throw WStoreError.notFound(
                "part \(String(cString: part)) of expert \(e.slot.expert) of layer \(e.slot.layer)")
        }
        data.pointee = p.data
        size.pointee = p.size
    }
}

/// See `wstore_expert_release` in wstore.h.
@_cdecl("wstore_expert_release")
public func wstore_expert_release(_ expert: OpaquePointer?) -> Int32 {
    guard let expert else { return WSTORE_OK.rawValue }
    guard experts.remove(expert) != nil else {
        return guarded { throw ABIError.invalidHandle("expert") }
    }
    return WSTORE_OK.rawValue
}

/// See `wstore_residency_prefetch` in wstore.h.
@_cdecl("wstore_residency_prefetch")
public func wstore_residency_prefetch(
    _ residency: OpaquePointer?, _ layer: Int64, _ list: UnsafePointer<Int64>?,
    _ count: Int
) -> Int32 {
    guarded {
        let box = try residencyFrom(residency)
        guard count == 0 || list != nil else { throw ABIError.invalidArgument("experts is NULL") }
        guard count >= 0 else { throw ABIError.invalidArgument("count \(count) is negative") }
        let asked = UnsafeBufferPointer(start: list, count: count)
        let unknown = box.manager.prefetch(layer: Int(clamping: layer), experts: asked.lazy.map { Int(clamping: $0) })
        guard unknown.isEmpty else {
            throw WStoreError.notFound(
                "experts \(unknown.map(String.init).joined(separator: ", ")) of layer \(layer) "
                    + "(the index has \(box.manager.geometry.layers) layers × \(box.manager.geometry.experts) experts); "
                    + "the other experts of the hint were queued")
        }
    }
}

/// See `wstore_residency_get_stats` in wstore.h.
@_cdecl("wstore_residency_get_stats")
public func wstore_residency_get_stats(
    _ residency: OpaquePointer?, _ layer: Int64,
    _ out: UnsafeMutablePointer<wstore_residency_stats>?
) -> Int32 {
    guarded {
        let box = try residencyFrom(residency)
        let out = try required(out, "out")
        let m = box.manager
        let stats = m.stats()
        guard layer < Int64(stats.layers.count) else {
            throw ABIError.invalidArgument(
                "layer \(layer) out of range: the expert index has \(stats.layers.count) layers")
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
        c.layer_resident_experts = UInt64(l.residentExperts)
        c.layer_resident_bytes = UInt64(l.residentBytes)
        out.pointee = c
    }
}

/// The manager of a handle, with `layer` checked against its expert index.
private func managerAndLayer(_ residency: OpaquePointer?, _ layer: Int64) throws -> ResidencyManager {
    let m = try residencyFrom(residency).manager
    guard layer >= 0, layer < Int64(m.geometry.layers) else {
        throw ABIError.invalidArgument("layer \(layer) out of range: the expert index has \(m.geometry.layers) layers")
    }
    return m
}

/// See `wstore_residency_mask` in wstore.h.
@_cdecl("wstore_residency_mask")
public func wstore_residency_mask(
    _ residency: OpaquePointer?, _ layer: Int64, _ words: UnsafeMutablePointer<UInt64>?,
    _ nWords: Int, _ written: UnsafeMutablePointer<Int>?
) -> Int32 {
    guarded {
        let m = try managerAndLayer(residency, layer)
        guard nWords >= 0, nWords == 0 || words != nil else { throw ABIError.invalidArgument("words is NULL") }
        let n =
            nWords == 0
            ? 0 : m.residencyMask(layer: Int(layer), into: UnsafeMutableBufferPointer(start: words, count: nWords))
        written?.pointee = n
    }
}

/// See `wstore_residency_observe` in wstore.h.
@_cdecl("wstore_residency_observe")
public func wstore_residency_observe(
    _ residency: OpaquePointer?, _ layer: Int64, _ experts: UnsafePointer<Int32>?,
    _ probs: UnsafePointer<Float>?, _ n: Int
) -> Int32 {
    guarded {
        let m = try managerAndLayer(residency, layer)
        guard n == 0 || (experts != nil && probs != nil) else {
            throw ABIError.invalidArgument("experts and probs must be non-NULL when n is positive")
        }
        guard n >= 0 else { throw ABIError.invalidArgument("n \(n) is negative") }
        let ids = (0 ..< n).map { Int(experts![$0]) }
        guard Set(ids).count == n else { throw ABIError.invalidArgument("experts repeat a candidate") }
        let p = (0 ..< n).map { Double(probs![$0]) }
        guard p.allSatisfy({ $0.isFinite && $0 >= 0 }) else {
            throw ABIError.invalidArgument("probs must be finite and not negative")
        }
        let unknown = m.observe(layer: Int(layer), experts: ids, probabilities: p)
        guard unknown.isEmpty else {
            throw WStoreError.notFound(
                "experts \(unknown.map(String.init).joined(separator: ", ")) of layer \(layer) "
                    + "(the index has \(m.geometry.layers) layers × \(m.geometry.experts) experts); "
                    + "the other candidates were counted")
        }
    }
}

/// See `wstore_residency_route` in wstore.h.
@_cdecl("wstore_residency_route")
public func wstore_residency_route(
    _ residency: OpaquePointer?, _ layer: Int64, _ experts: UnsafePointer<Int32>?,
    _ probs: UnsafePointer<Float>?, _ n: Int, _ k: Int32, _ tolerance: Double,
    _ outExperts: UnsafeMutablePointer<Int32>?, _ swapped: UnsafeMutablePointer<Int32>?,
    _ massGivenUp: UnsafeMutablePointer<Double>?
) -> Int32 {
    guarded {
        let m = try managerAndLayer(residency, layer)
        guard n > 0, let experts, let probs, let outExperts else {
            throw ABIError.invalidArgument("experts, probs and out_experts must be non-NULL and n positive")
        }
        let want = k > 0 ? Int(k) : m.geometry.topK
        guard want >= 1, want <= n else { throw ABIError.invalidArgument("k \(want) must be between 1 and n (\(n))") }
        guard tolerance >= 0, tolerance <= 1 else {
            throw ABIError.invalidArgument("tolerance \(tolerance) is outside [0, 1]")
        }
        let ids = (0 ..< n).map { Int(experts[$0]) }
        guard Set(ids).count == n else { throw ABIError.invalidArgument("experts repeat a candidate") }
        let p = (0 ..< n).map { Double(probs[$0]) }
        guard p.allSatisfy({ $0.isFinite && $0 >= 0 }) else {
            throw ABIError.invalidArgument("probs must be finite and not negative")
        }
        let choice = m.residentAwareTopK(
            layer: Int(layer), experts: ids, probabilities: p, k: want, tolerance: tolerance)
        for (i, e) in choice.experts.enumerated() { outExperts[i] = Int32(e) }
        swapped?.pointee = Int32(choice.swapped)
        massGivenUp?.pointee = choice.massGivenUp
    }
}

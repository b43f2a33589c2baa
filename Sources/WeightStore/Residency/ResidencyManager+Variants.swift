import WStoreCore

extension ResidencyManager {
    /// The low-bit copies stored for each of `experts` (in their order), finest first:
    /// for each precision at which at least one part has a variant, the copy's layout
    /// (parts in name order, each 64-byte aligned in one buffer): the part's blocks at
    /// that precision where it has them, else its exact bytes. Reads keys and record
    /// headers only.
    /// - Throws: a store error.
    package static func variantLayouts(
        store: WeightStore, model: String, experts: [(layer: Int, expert: Int, layout: ExpertLayout)]
    ) throws -> [[(ExpertPrecision, ExpertLayout)]] {
        try store.withSnapshot { s in
            try experts.map { e in
                let stored = try s.precisions(layer: e.layer, expert: e.expert, model: model)
                let precisions = Set(stored.values.joined()).subtracting([.exact]).sorted(by: >)
                return try precisions.map { precision in
                    var parts: [ExpertLayout.Part] = []
                    var offset = 0
                    for exact in e.layout.parts {
                        var p = exact
                        p.offset = offset
                        if stored[exact.name]?.contains(precision) == true,
                            let info = try s.variantInfo(
                                precision, of: ExpertKey(layer: e.layer, expert: e.expert, part: exact.name),
                                model: model)
                        {
                            p.size = info.rawSize
                            p.dtype = info.dtype
                            p.shape = info.shape
                            p.precision = precision
                            p.storedSize = info.storedSize
                        }
                        parts.append(p)
                        offset += (p.size + 63) & ~63
                    }
                    return (precision, ExpertLayout(parts: parts, totalBytes: offset))
                }
            }
        }
    }

    /// Reads the parts of low-bit copy `slot` into `buffer` at their offsets, checksums
    /// verified: each part's blocks, or its exact bytes when it has no variant at the
    /// copy's precision.
    /// - Throws: a store error (a damaged record is a checksum error, never wrong bytes).
    func readVariant(_ s: borrowing WeightStore.Snapshot, _ slot: ExpertSlot, into buffer: UnsafeMutableRawPointer)
        throws
    {
        for p in slot.layout.parts {
            let into = UnsafeMutableRawBufferPointer(start: buffer + p.offset, count: p.size)
            if p.precision == .exact {
                try s.read(p.tensor, model: model, into: into, threads: options.decodeThreads, path: options.loadPath)
            } else {
                try s.readVariant(
                    p.precision, of: ExpertKey(layer: slot.layer, expert: slot.expert, part: p.name), model: model,
                    into: into, threads: options.decodeThreads, verify: true, path: options.loadPath)
            }
        }
    }
}

import WStoreCore

extension ResidencyManager {
    /// The low-bit copies stored for each of `experts` (in their order): each copy's
    /// precision and its layout (parts in name order, each 64-byte aligned in one buffer,
    /// with the block dtype and the logical shape).
    /// - Throws: a store error.
    package static func variantLayouts(
        store: WeightStore, model: String, experts: [(layer: Int, expert: Int, layout: ExpertLayout)]
    ) throws -> [[(ExpertPrecision, ExpertLayout)]] {
        experts.map { _ in [] }
    }

    /// Reads the parts of low-bit copy `slot` into `buffer` at their offsets, checksums verified.
    /// - Throws: a store error.
    func readVariant(_ s: borrowing WeightStore.Snapshot, _ slot: ExpertSlot, into buffer: UnsafeMutableRawPointer)
        throws
    {
        throw WStoreError.notFound("\(slot.precision.rawValue) copy of expert \(slot.expert) of layer \(slot.layer)")
    }
}

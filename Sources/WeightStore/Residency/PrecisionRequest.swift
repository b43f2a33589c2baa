import WStoreCore

/// The precision an engine accepts for one acquire.
///
/// - ``exact``: the lossless copy only (what an acquire without a request gets).
/// - ``atLeast(_:upgrade:)``: any copy at least that precise: a resident one (the most
///   precise resident wins), a load already in flight, else the smallest stored copy
///   that qualifies is loaded.
/// - ``fastest(upgrade:)``: whatever is fastest now: any resident copy, any load in
///   flight, else the smallest stored copy.
///
/// With `upgrade`, an expert served low-bit may be upgraded to its exact copy in the
/// background (HOBBIT), when the policy calls it hot (``ResidencyPolicy/upgrades(_:)``);
/// later acquires then get the exact copy. An upgrade never changes bytes under a pinned
/// handle: the exact copy loads into its own buffer, and the low-bit one is freed once
/// no handle pins it.
public struct PrecisionRequest: Sendable, Hashable, CustomStringConvertible {
    /// The least precise copy accepted; `nil` accepts any.
    public var minimum: ExpertPrecision?
    /// Whether a low-bit copy may be upgraded to exact in the background.
    public var upgrade: Bool

    /// A request for copies at least as precise as `minimum` (any when `nil`).
    public init(minimum: ExpertPrecision?, upgrade: Bool = false) {
        self.minimum = minimum
        self.upgrade = upgrade
    }

    /// The lossless copy only.
    public static let exact = PrecisionRequest(minimum: .exact)

    /// Any copy at least as precise as `precision`.
    public static func atLeast(_ precision: ExpertPrecision, upgrade: Bool = false) -> PrecisionRequest {
        PrecisionRequest(minimum: precision, upgrade: upgrade)
    }

    /// Any copy: the most precise resident one, a load in flight, else the smallest stored one.
    public static func fastest(upgrade: Bool = false) -> PrecisionRequest {
        PrecisionRequest(minimum: nil, upgrade: upgrade)
    }

    /// Whether a copy at `precision` satisfies the request.
    @inline(__always) public func accepts(_ precision: ExpertPrecision) -> Bool {
        guard let minimum else { return true }
        return precision >= minimum
    }

    /// Whether only the exact copy is accepted.
    @inline(__always) var isExact: Bool { minimum == .exact }

    public var description: String {
        let base = minimum.map { $0 == .exact ? "exact" : "at least \($0.rawValue)" } ?? "fastest"
        return upgrade && !isExact ? base + ", upgrading" : base
    }
}

/// Why the residency manager could not hand out an expert.
public enum ResidencyError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The store's expert index has no such expert.
    case notIndexed(layer: Int, expert: Int, model: String)
    /// The expert alone is larger than the whole budget.
    case expertLargerThanBudget(layer: Int, expert: Int, bytes: Int, budget: Int)
    /// Every resident expert is pinned and there is no room for this one (raised at once
    /// with `whenFull: .fail`, or after the wait timed out).
    case budgetExhausted(layer: Int, expert: Int, budget: Int, pinnedBytes: Int)
    /// A set of experts asked for at once is larger than the whole budget.
    case setLargerThanBudget(layer: Int, experts: [Int], bytes: Int, budget: Int)

    public var description: String {
        switch self {
        case let .notIndexed(l, e, model):
            "expert \(e) of layer \(l) is not in the expert index of model \(model)"
        case let .expertLargerThanBudget(l, e, bytes, budget):
            "expert \(e) of layer \(l) needs \(bytes) bytes, more than the whole residency budget of \(budget) bytes; raise the budget"
        case let .setLargerThanBudget(l, experts, bytes, budget):
            "experts \(experts.map(String.init).joined(separator: ", ")) of layer \(l) need \(bytes) bytes together, more than the whole residency budget of \(budget) bytes; raise the budget or acquire fewer at once"
        case let .budgetExhausted(l, e, budget, pinned):
            "no room for expert \(e) of layer \(l): \(pinned) of \(budget) budget bytes are pinned by unreleased handles; release handles or raise the budget"
        }
    }
}

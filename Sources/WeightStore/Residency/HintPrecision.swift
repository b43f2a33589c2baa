/// How often a layer's prefetch hints come true, as the policies that weigh hints
/// (``ForecastPolicy``, ``AdaptivePolicy``) measure it: per layer, counts of hints given
/// and of hints the layer's next token used, both decayed over about 512 hints and
/// starting at one use in two hints; per expert, the token its latest hint named.
struct HintPrecision {
    private var hintToken: [Int]
    private var given: [Double]
    private var used: [Double]

    /// No hints yet for the experts of `geometry`.
    init(geometry: ResidencyGeometry) {
        hintToken = Array(repeating: Int.min / 2, count: geometry.count)
        given = Array(repeating: 2, count: geometry.layers)
        used = Array(repeating: 1, count: geometry.layers)
    }

    /// A hint that `id`, of layer `layer`, is used by the layer's token `token`; a repeat
    /// of the same hint counts once.
    mutating func hinted(_ id: Int, layer: Int, token: Int) {
        guard hintToken[id] != token else { return }
        let d = 1 - 1.0 / 512
        given[layer] = given[layer] * d + 1
        used[layer] *= d
        hintToken[id] = token
    }

    /// A demand use of `id`, of layer `layer`, by the layer's token `token`.
    mutating func accessed(_ id: Int, layer: Int, token: Int) {
        if hintToken[id] == token { used[layer] += 1 }
    }

    /// Whether a hint named `id` for its layer's token `token`.
    func isHinted(_ id: Int, token: Int) -> Bool { hintToken[id] == token }

    /// The share of layer `layer`'s hints that came true, in 0...1.
    func precision(layer: Int) -> Double { min(1, used[layer] / given[layer]) }
}

import WStoreCore
import WStoreKernels

/// SnapKV (arXiv 2404.14469): keeps, per head, the prefix positions the observation
/// window attends to most, plus the window itself.
///
/// Faithful to the reference code (FasterDecoding/SnapKV `snapkv_utils.py`,
/// NVIDIA kvpress `snapkv_press.py`):
/// 1. scores = softmax(Q·Kᵀ/√head_dim) of the last `window` queries over every position,
///    causally masked inside the window;
/// 2. summed over the window queries, over the prefix positions (all but the window);
/// 3. 1-D pooling, kernel k, stride 1, padding k/2 (average pooling counts the padding,
///    max pooling pads with −∞);
/// 4. per KV head (``Heads/kv``), the pooled scores of the heads of its group are averaged;
/// 5. the top `capacity − window` prefix positions are kept, and the window always.
/// Nothing is evicted when the prompt is at most `capacity` tokens.
///
/// Scores are computed in f32 (the reference rounds them to the model's dtype); a tie in
/// score is broken by the lower position. Kept positions are returned ascending.
public enum SnapKV {
    /// How scores are pooled along positions.
    public enum Pooling: String, Sendable, CaseIterable {
        /// `max_pool1d`, padding with −∞.
        case max
        /// `avg_pool1d` with `count_include_pad`: the padding counts as zeros.
        case avg
    }

    /// Which heads get their own selection.
    public enum Heads: String, Sendable, CaseIterable {
        /// One selection per query head (the reference); keys and values are repeated per query head.
        case query
        /// One selection per KV head, from the scores of its query group averaged (kvpress).
        case kv
    }

    /// SnapKV's knobs.
    public struct Config: Sendable, Equatable {
        /// Observation window: the last `window` queries, always kept.
        public var window: Int = 32
        /// Positions kept per head, the window included.
        public var capacity: Int = 2048
        /// Pooling kernel (odd).
        public var kernel: Int = 7
        /// Pooling kind.
        public var pooling: Pooling = .max
        /// Head mode.
        public var heads: Heads = .query

        /// The defaults: window 32, capacity 2048, kernel 7, max pooling, per query head.
        public init() {}

        /// Checks the knobs against each other.
        /// - Throws: ``WStoreError/invalidArgument(_:)``.
        public func validate() throws {
            guard window > 0 else { throw WStoreError.invalidArgument("SnapKV window must be positive, got \(window)") }
            guard capacity > window else {
                throw WStoreError.invalidArgument("SnapKV capacity (\(capacity)) must exceed the window (\(window))")
            }
            guard kernel > 0, kernel % 2 == 1 else {
                throw WStoreError.invalidArgument("SnapKV pooling kernel must be odd and positive, got \(kernel)")
            }
        }
    }

    /// The positions to keep.
    ///
    /// - Parameters:
    ///   - queries: `[qHeads, ≥ window, headDim]`: the last `window` rows are the observation window.
    ///   - keys: `[kvHeads, tokens, headDim]`, with `qHeads` a multiple of `kvHeads`.
    ///   - threads: heads are scored on up to this many threads.
    /// - Returns: per head (query heads or KV heads, by ``Config/heads``) the kept positions,
    ///   ascending; every head keeps `min(tokens, capacity)`.
    /// - Throws: ``WStoreError/invalidArgument(_:)`` for shapes that do not fit.
    /// - Complexity: O(qHeads · window · tokens · headDim).
    public static func select(
        queries: KVTensor, keys: KVTensor, config: Config = Config(),
        threads: Int = 1
    ) throws -> [[Int32]] {
        try config.validate()
        try checkShapes(queries: queries, keys: keys, config: config)
        let outHeads = config.heads == .query ? queries.heads : keys.heads
        let t = keys.tokens
        if t <= config.capacity {
            return Array(repeating: (0 ..< t).map { Int32($0) }, count: outHeads)
        }
        let scores = try pooledScores(queries: queries, keys: keys, config: config, threads: threads)
        let keep = config.capacity - config.window, prefix = t - config.window
        return scores.map { s in
            topPositions(s, count: keep) + (prefix ..< t).map { Int32($0) }
        }
    }

    /// Per head (by ``Config/heads``), the pooled scores of the prefix positions
    /// (`tokens − window` of them), before the top-k: what ``select(queries:keys:config:threads:)`` ranks.
    /// - Throws: ``WStoreError/invalidArgument(_:)`` for shapes that do not fit.
    public static func pooledScores(
        queries: KVTensor, keys: KVTensor, config: Config = Config(),
        threads: Int = 1
    ) throws -> [[Float]] {
        try config.validate()
        try checkShapes(queries: queries, keys: keys, config: config)
        // Scores of NaN or infinite queries or keys rank nothing.
        for (t, what) in [(queries, "queries"), (keys, "keys")] where t.hasNonFinite {
            throw WStoreError.invalidArgument("SnapKV cannot rank positions: the \(what) hold NaN or infinite values")
        }
        guard keys.tokens > config.window else {
            throw WStoreError.invalidArgument(
                "SnapKV needs more tokens (\(keys.tokens)) than the window (\(config.window))")
        }
        let kvHeads = keys.heads, group = queries.heads / kvHeads
        var perQueryHead = [[Float]](repeating: [], count: queries.heads)
        let sink = UncheckedSendable(UnsafeMutableBufferPointer<[Float]>.allocate(capacity: queries.heads))
        sink.value.initialize(repeating: [])
        defer {
            sink.value.deinitialize()
            sink.value.deallocate()
        }
        // Scratch per worker, reused for every head it scores (fresh pages cost more than the math).
        let workers = max(1, min(threads, kvHeads))
        let scratch = (0 ..< workers).map { _ in
            UncheckedSendable(Scratch(queries: queries, keys: keys, window: config.window))
        }
        defer { scratch.forEach { $0.value.free() } }
        try parallelFor(kvHeads, threads: workers) { g, w in
            let rows = windowScores(queries: queries, keys: keys, kvHead: g, config: config, scratch: scratch[w].value)
            for (r, s) in rows.enumerated() {
                sink.value[g * group + r] = pool(s, kernel: config.kernel, pooling: config.pooling)
            }
        }
        for h in 0 ..< queries.heads { perQueryHead[h] = sink.value[h] }
        // Finite f32 queries and keys whose dot products overflow leave scores that rank nothing too.
        for (h, s) in perQueryHead.enumerated() where s.contains(where: { !$0.isFinite }) {
            throw WStoreError.invalidArgument(
                "SnapKV scores of query head \(h) are not finite: the queries or keys are too large")
        }
        guard config.heads == .kv, group > 1 else { return perQueryHead }
        return (0 ..< kvHeads).map { g in
            var mean = perQueryHead[g * group]
            for r in 1 ..< group {
                let s = perQueryHead[g * group + r]
                for i in mean.indices { mean[i] += s[i] }
            }
            let inv = 1 / Float(group)
            for i in mean.indices { mean[i] *= inv }
            return mean
        }
    }

    private static func checkShapes(queries: KVTensor, keys: KVTensor, config: Config) throws {
        guard queries.headDim == keys.headDim else {
            throw WStoreError.invalidArgument("queries have head size \(queries.headDim), keys \(keys.headDim)")
        }
        guard keys.heads > 0, queries.heads % keys.heads == 0 else {
            throw WStoreError.invalidArgument(
                "\(queries.heads) query heads are not a multiple of \(keys.heads) KV heads")
        }
        guard queries.tokens >= config.window || keys.tokens <= config.capacity else {
            throw WStoreError.invalidArgument("SnapKV needs the last \(config.window) queries, got \(queries.tokens)")
        }
    }

    /// Buffers for scoring one KV head.
    private struct Scratch {
        let panels: UnsafeMutablePointer<Float>
        let staging: UnsafeMutablePointer<Float>
        let q: UnsafeMutablePointer<Float>
        let s: UnsafeMutablePointer<Float>

        init(queries: KVTensor, keys: KVTensor, window: Int) {
            let d = keys.headDim, t = keys.tokens, rows = queries.heads / keys.heads * window
            panels = .allocate(capacity: (t + 15) / 16 * 16 * d)
            staging = .allocate(capacity: 16 * d)
            q = .allocate(capacity: rows * d)
            s = .allocate(capacity: min(rows, Scratch.rowBlock) * t)
        }

        /// Window rows scored together (a multiple of the kernel's 6 rows): measured best among 12 to 128 rows.
        static let rowBlock = 60

        func free() {
            panels.deallocate()
            staging.deallocate()
            q.deallocate()
            s.deallocate()
        }
    }

    /// For the query heads of KV head `g`: the softmax weights of the window queries
    /// summed over the window, over the prefix positions. One array per query head.
    private static func windowScores(
        queries: KVTensor, keys: KVTensor, kvHead g: Int, config: Config,
        scratch: Scratch
    ) -> [[Float]] {
        let d = keys.headDim, t = keys.tokens, w = config.window
        let group = queries.heads / keys.heads, prefix = t - w, rows = group * w
        let esz = keys.elementSize
        // Keys of this head, as f32, in panels of 16 (transposed) so the kernel needs no horizontal sums.
        keys.bytes.withUnsafeBytes { raw in
            let head = g * t * d * esz
            var p0 = 0
            while p0 < t {
                let n = min(16, t - p0)
                FloatCodec.decode(
                    UnsafeRawBufferPointer(rebasing: raw[head + p0 * d * esz ..< head + (p0 + n) * d * esz]),
                    from: keys.dtype, into: scratch.staging)
                NumericKernels.packPanels(scratch.staging, n: n, d: d, into: scratch.panels + p0 * d)
                p0 += n
            }
        }
        // The window queries of its group, as f32.
        let q = scratch.q
        let qt = queries.tokens, qsz = queries.elementSize
        queries.bytes.withUnsafeBytes { raw in
            for r in 0 ..< group {
                let h = g * group + r
                let from = (h * qt + qt - w) * d * qsz
                FloatCodec.decode(
                    UnsafeRawBufferPointer(rebasing: raw[from ..< from + w * d * qsz]),
                    from: queries.dtype, into: q + r * w * d)
            }
        }
        // S[row][pos] = q_row · k_pos / √d, a block of rows at a time so the block stays in cache
        // while the softmax reads it (the key panels are read once per block).
        let s = scratch.s, block = Scratch.rowBlock
        let scale = 1 / Float(d).squareRoot()
        var out = [[Float]](repeating: [Float](repeating: 0, count: prefix), count: group)
        var r0 = 0
        while r0 < rows {
            let m = min(block, rows - r0)
            NumericKernels.panelDots(q + r0 * d, m: m, scratch.panels, n: t, d: d, scale: scale, into: s, ldo: t)
            for b in 0 ..< m {
                let r = (r0 + b) / w, i = (r0 + b) % w
                // Query i of the window sits at position prefix + i and sees positions 0...prefix + i.
                let row = s + b * t, visible = prefix + i + 1
                let mx = NumericKernels.max(row, count: visible)
                let inv = Float(1 / NumericKernels.expShiftSum(row, count: visible, shift: mx))
                out[r].withUnsafeMutableBufferPointer { acc in
                    for p in 0 ..< prefix { acc[p] += row[p] * inv }
                }
            }
            r0 += m
        }
        return out
    }

    /// 1-D pooling, kernel `k` (odd), stride 1, padding k/2: output as long as the input.
    package static func pool(_ x: [Float], kernel k: Int, pooling: Pooling) -> [Float] {
        let n = x.count, half = k / 2
        guard k > 1 else { return x }
        var out = [Float](repeating: 0, count: n)
        x.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for i in 0 ..< n {
                    let lo = max(0, i - half), hi = min(n - 1, i + half)
                    switch pooling {
                    case .max:
                        var m = src[lo]
                        for j in lo ... hi where src[j] > m { m = src[j] }
                        dst[i] = m
                    case .avg:
                        var sum: Float = 0
                        for j in lo ... hi { sum += src[j] }
                        dst[i] = sum / Float(k)
                    }
                }
            }
        }
        return out
    }

    /// The `count` positions of largest score, ties to the lower position, ascending.
    package static func topPositions(_ s: [Float], count: Int) -> [Int32] {
        if count >= s.count { return (0 ..< s.count).map { Int32($0) } }
        if count <= 0 { return [] }
        // The count-th largest value, by selection on a copy.
        var v = s
        let threshold = v.withUnsafeMutableBufferPointer { quickselectDescending($0, k: count - 1) }
        // NaN ranks as −∞ here as in the selection, so exactly `count` positions come out.
        func rank(_ x: Float) -> Float { x.isNaN ? -.infinity : x }
        var above = 0
        for x in s where rank(x) > threshold { above += 1 }
        var equalBudget = count - above
        var out = [Int32]()
        out.reserveCapacity(count)
        for (i, x) in s.lazy.map(rank).enumerated() {
            if x > threshold {
                out.append(Int32(i))
            } else if x == threshold && equalBudget > 0 {
                out.append(Int32(i))
                equalBudget -= 1
            }
        }
        return out
    }

    /// The element that would sit at index `k` if `a` were sorted descending (NaN counts as smallest).
    private static func quickselectDescending(_ a: UnsafeMutableBufferPointer<Float>, k: Int) -> Float {
        for i in a.indices where a[i].isNaN { a[i] = -.infinity }
        var lo = 0, hi = a.count - 1
        var rng = SystemRandomNumberGenerator()
        while lo < hi {
            let pivot = a[Int.random(in: lo ... hi, using: &rng)]
            // Three-way partition: > pivot, == pivot, < pivot.
            var lt = lo, i = lo, gt = hi
            while i <= gt {
                if a[i] > pivot {
                    a.swapAt(lt, i)
                    lt += 1
                    i += 1
                } else if a[i] < pivot {
                    a.swapAt(i, gt)
                    gt -= 1
                } else {
                    i += 1
                }
            }
            if k < lt { hi = lt - 1 } else if k > gt { lo = gt + 1 } else { return pivot }
        }
        return a[lo]
    }
}

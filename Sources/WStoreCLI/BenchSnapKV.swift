import ArgumentParser
import Foundation
import KVCache
import WStoreCore
import WStoreKernels
import WeightStore

/// `wstore bench snapkv`: SnapKV selection time, beside a plain dot-product loop over the same data.
struct BenchSnapKV: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapkv",
        abstract:
            "Time SnapKV selection on generated queries and keys, beside a plain Q·Kᵀ loop measured in the same run.")

    @Option(help: "Query heads.") var qHeads = 32
    @Option(help: "KV heads.") var kvHeads = 8
    @Option(help: "Prompt tokens.") var tokens = 16384
    @Option(help: "Head size.") var headDim = 128
    @Option(help: "Observation window.") var window = 32
    @Option(help: "Kept positions per head.") var capacity = 2048
    @Option(help: "Pooling kernel.") var kernel = 7
    @Option(help: "max or avg.") var pool = "max"
    @Option(help: "query or kv.") var heads = "query"
    @Option(help: "f16, bf16 or f32.") var dtype = "f16"
    @Option(help: "Threads (heads run in parallel).") var threads = 1
    @Option(name: .customLong("repeat"), help: "Repetitions; the median is reported.") var repetitions = 3
    @Flag(help: "Print JSON.") var json = false

    func validate() throws {
        guard qHeads > 0, kvHeads > 0, qHeads % kvHeads == 0, tokens > 0, headDim > 0, threads > 0, repetitions > 0
        else {
            throw ValidationError(
                "heads, tokens, head size, threads and repeat must be positive; q-heads a multiple of kv-heads")
        }
        guard SnapKV.Pooling(rawValue: pool) != nil, SnapKV.Heads(rawValue: heads) != nil else {
            throw ValidationError("--pool takes max or avg, --heads query or kv")
        }
        guard let d = DType(safetensorsName: dtype.uppercased()), KVTensor.supportedDTypes.contains(d) else {
            throw ValidationError("--dtype takes f16, bf16 or f32")
        }
    }

    func run() throws {
        let dt = DType(safetensorsName: dtype.uppercased())!
        var rng = SplitMix64(seed: 3)
        func floats(_ n: Int) -> [Float] {
            rng.bf16Normal(count: n, std: 1).map { Float(bitPattern: UInt32($0) << 16) }
        }
        let q = try KVTensor(
            floats: floats(qHeads * window * headDim), dtype: dt, heads: qHeads, tokens: window, headDim: headDim)
        let k = try KVTensor(
            floats: floats(kvHeads * tokens * headDim), dtype: dt, heads: kvHeads, tokens: tokens, headDim: headDim)
        var c = SnapKV.Config()
        c.window = window
        c.capacity = capacity
        c.kernel = kernel
        c.pooling = SnapKV.Pooling(rawValue: pool)!
        c.heads = SnapKV.Heads(rawValue: heads)!
        try c.validate()
        var times: [Double] = [], cpus: [Double] = []
        var kept = 0
        for _ in 0 ..< repetitions {
            let (sel, t, cpu) = try kvTimeCPU { try SnapKV.select(queries: q, keys: k, config: c, threads: threads) }
            times.append(t)
            cpus.append(cpu)
            kept = sel.first?.count ?? 0
        }
        let snap = times.sorted()[times.count / 2], snapCPU = cpus.sorted()[cpus.count / 2]
        // Baseline: the same Q·Kᵀ products by a plain scalar loop, on one query head, scaled to all heads.
        let qf = q.floats(), kf = Array(k.floats()[0 ..< tokens * headDim])
        let (w, n, dim) = (window, tokens, headDim)
        let (sink, one, oneCPU) = kvTimeCPU { () -> Float in
            qf.withUnsafeBufferPointer { qp in
                kf.withUnsafeBufferPointer { kp in
                    var total: Float = 0
                    for i in 0 ..< w {
                        for p in 0 ..< n {
                            var s: Float = 0
                            for d in 0 ..< dim { s += qp[i * dim + d] * kp[p * dim + d] }
                            total += s
                        }
                    }
                    return total
                }
            }
        }
        let plain = one * Double(qHeads), plainCPU = oneCPU * Double(qHeads)
        let flops = 2.0 * Double(qHeads * window * tokens * headDim)
        if json {
            struct Report: Encodable {
                var q_heads: Int, kv_heads: Int, tokens: Int, head_dim: Int, window: Int, capacity: Int, kernel: Int
                var pool: String, heads: String, dtype: String, threads: Int
                var snapkv_ms: Double, plain_qk_ms: Double, speedup_vs_plain_qk: Double
                var snapkv_cpu_ms: Double, plain_qk_cpu_ms: Double, cpu_speedup_vs_plain_qk: Double
                var snapkv_gflops: Double, score_kernel: String, kept_per_head: Int
            }
            try JSONOutput.print(
                Report(
                    q_heads: qHeads, kv_heads: kvHeads, tokens: tokens, head_dim: headDim, window: window,
                    capacity: capacity,
                    kernel: kernel, pool: pool, heads: heads, dtype: dtype, threads: threads, snapkv_ms: snap * 1000,
                    plain_qk_ms: plain * 1000, speedup_vs_plain_qk: plain / snap, snapkv_cpu_ms: snapCPU * 1000,
                    plain_qk_cpu_ms: plainCPU * 1000, cpu_speedup_vs_plain_qk: plainCPU / snapCPU,
                    snapkv_gflops: flops / snap / 1e9,
                    score_kernel: NumericKernels.scorePath, kept_per_head: kept))
            return
        }
        print(
            "SnapKV: \(qHeads) query heads / \(kvHeads) KV heads x \(tokens) tokens x head_dim \(headDim) (\(dtype)), window \(window), capacity \(capacity), kernel \(kernel), \(pool) pooling, per \(heads) head, \(threads) thread(s), score kernel: \(NumericKernels.scorePath)"
        )
        print(
            TextTable(
                ["path", "wall ms", "CPU ms", "GFLOP/s (Q·Kᵀ, CPU)", "x plain loop (CPU)"],
                [
                    [
                        "plain scalar Q·Kᵀ loop (baseline; 1 head timed, x\(qHeads))",
                        String(format: "%.1f", plain * 1000),
                        String(format: "%.1f", plainCPU * 1000), String(format: "%.1f", flops / plainCPU / 1e9), "1.00",
                    ],
                    [
                        "SnapKV selection (scores, softmax, pooling, top-k)", String(format: "%.1f", snap * 1000),
                        String(format: "%.1f", snapCPU * 1000), String(format: "%.1f", flops / snapCPU / 1e9),
                        String(format: "%.2f", plainCPU / snapCPU),
                    ],
                ]
            ).render())
        print(
            "median of \(repetitions); CPU ms is the process CPU time (all threads), steadier than wall time on a busy machine"
        )
        if sink.isNaN { print("") }  // keeps the baseline loop from being optimized away
    }
}

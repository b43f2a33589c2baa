import Benchmark
import Foundation
import KVCache

/// Deterministic normal-ish floats.
func normals(_ n: Int, seed: UInt64) -> [Float] {
    var s = seed | 1
    return (0 ..< n).map { _ in
        s ^= s << 13
        s ^= s >> 7
        s ^= s << 17
        let u1 = Float(s >> 40) / Float(1 << 24) + 1e-7
        s ^= s << 13
        s ^= s >> 7
        s ^= s << 17
        let u2 = Float(s >> 40) / Float(1 << 24)
        return (-2 * log(u1)).squareRoot() * cos(2 * .pi * u2)
    }
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .mallocCountTotal],
        timeUnits: .milliseconds, maxDuration: .seconds(3), maxIterations: 1000,
        thresholds: [.wallClock: .init(relative: BenchmarkThresholds.Relative.relaxed)])

    // SnapKV selection: 32 query heads / 8 KV heads × 4096 tokens × 128, window 32,
    // capacity 1024, on one thread (the goal is stated for 16k tokens).
    Benchmark("snapkv_select_32q_8kv_4096x128_1t") { benchmark in
        let keys = try KVTensor(
            floats: normals(8 * 4096 * 128, seed: 1), dtype: .f16, heads: 8, tokens: 4096, headDim: 128)
        let queries = try KVTensor(
            floats: normals(32 * 32 * 128, seed: 2), dtype: .f16, heads: 32, tokens: 32, headDim: 128)
        var config = SnapKV.Config()
        config.capacity = 1024
        config.heads = .kv
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            blackHole(try SnapKV.select(queries: queries, keys: keys, config: config, threads: 1))
        }
    }

    // KV quantize + store, then lookup + dequantize: 2 layers × 8 KV heads × 512 tokens
    // × 128 bf16 (8 MiB of K and V), int4 KIVI, through a real store.
    for codec in [KVCodec.int4, .lossless] {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("wstore-kv-bench-\(getpid())-\(codec)")
            .path
        let tokens = (0 ..< 512).map { UInt32($0 * 7 + 1) }
        func cache() throws -> KVCacheData {
            try KVCacheData(
                layers: (0 ..< 2).map { l in
                    try KVLayer(
                        keys: KVTensor(
                            floats: normals(8 * 512 * 128, seed: UInt64(10 + l)), dtype: .bf16, heads: 8, tokens: 512,
                            headDim: 128),
                        values: KVTensor(
                            floats: normals(8 * 512 * 128, seed: UInt64(20 + l)), dtype: .bf16, heads: 8, tokens: 512,
                            headDim: 128))
                })
        }
        Benchmark("kv_store_\(codec)_2x8x512x128_bf16_1t") { benchmark in
            let kv = try cache()
            var options = KVStore.Options()
            options.codec = codec
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                benchmark.stopMeasurement()
                try? FileManager.default.removeItem(atPath: dir)
                let store = try KVStore.create(at: dir, options: options)
                benchmark.startMeasurement()
                blackHole(try store.store(tokens: tokens, model: "m", kv: kv))
            }
            try? FileManager.default.removeItem(atPath: dir)
        }
        Benchmark("kv_lookup_\(codec)_2x8x512x128_bf16_1t") { benchmark in
            try? FileManager.default.removeItem(atPath: dir)
            var options = KVStore.Options()
            options.codec = codec
            let store = try KVStore.create(at: dir, options: options)
            _ = try store.store(tokens: tokens, model: "m", kv: cache())
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                blackHole(try store.lookup(tokens: tokens, model: "m"))
            }
            benchmark.stopMeasurement()
            try? FileManager.default.removeItem(atPath: dir)
        }
    }
}

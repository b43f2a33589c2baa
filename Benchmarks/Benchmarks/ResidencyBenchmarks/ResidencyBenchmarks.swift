import Benchmark
import Foundation
import WeightStore

/// A store of 2 layers × 8 experts (3 raw bf16 parts of 64 KiB each), built once per run.
final class ExpertFixture: @unchecked Sendable {
    static let shared = ExpertFixture()
    let dir: String
    let store: WeightStore

    private init() {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("wstore-res-bench-\(getpid())").path
        try? FileManager.default.removeItem(atPath: dir)
        store = try! WeightStore.create(at: dir)
        let part = [UInt16](repeating: 0x3C00, count: 32 << 10)
        try! store.write { w in
            for layer in 0 ..< 2 {
                for expert in 0 ..< 8 {
                    for name in ["gate", "up", "down"] {
                        try part.withUnsafeBytes { b -> Void in
                            try w.put(
                                "l\(layer).e\(expert).\(name)", dtype: .bf16, shape: [part.count], bytes: b,
                                codec: .raw, expert: ExpertKey(layer: layer, expert: expert, part: name))
                        }
                    }
                }
            }
        }
    }

    deinit { try? FileManager.default.removeItem(atPath: dir) }
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .mallocCountTotal],
        timeUnits: .nanoseconds, maxDuration: .seconds(2), maxIterations: 100_000,
        thresholds: [
            .wallClock: .init(relative: BenchmarkThresholds.Relative.relaxed),
            .mallocCountTotal: .init(relative: [.p50: 0], absolute: [.p50: 2]),
        ])

    // A hit: the expert is resident; acquire pins it, release unpins it.
    Benchmark("acquire_release_resident") { benchmark in
        let manager = try ResidencyManager(store: ExpertFixture.shared.store, budget: 64 << 20)
        try manager.acquire(layer: 0, expert: 3).release()
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            let h = try manager.acquire(layer: 0, expert: 3)
            h.withBytes { blackHole($0.baseAddress) }
            h.release()
        }
    }

    // A miss every time: room for one expert, two experts alternating, each load a
    // copy of 192 KiB out of the map (plus its checksum).
    Benchmark("acquire_release_miss_load_192KiB") { benchmark in
        var options = ResidencyManager.Options()
        options.policy = .lru
        let manager = try ResidencyManager(store: ExpertFixture.shared.store, budget: 200 << 10, options: options)
        benchmark.startMeasurement()
        for i in benchmark.scaledIterations {
            let h = try manager.acquire(layer: 1, expert: i & 1)
            h.withBytes { blackHole($0.baseAddress) }
            h.release()
        }
    }
}

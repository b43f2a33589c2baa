import Benchmark
import Foundation
import WeightStore

/// A store with one 4 MiB tensor per (dtype, codec) case, built once per run in a
/// temporary directory from weight-like values (normal, std 0.02).
final class Fixture: @unchecked Sendable {
    static let shared = Fixture()
    let dir: String
    let store: WeightStore
    static let elementsBF16 = 2 << 20  // 4 MiB of bf16

    private init() {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("wstore-bench-\(getpid())").path
        try? FileManager.default.removeItem(atPath: dir)
        store = try! WeightStore.create(at: dir)
        let n = Fixture.elementsBF16
        let f32 = Fixture.normal(count: n, std: 0.02)
        let bf16 = f32.map { UInt16(truncatingIfNeeded: $0.bitPattern >> 16) }
        let f16 = f32.map { Float16($0).bitPattern }
        let f32Half = Array(f32.prefix(n / 2))  // 4 MiB of f32
        try! store.write { w in
            try bf16.withUnsafeBytes { b -> Void in
                try w.put("bf16.zstd", dtype: .bf16, shape: [n], bytes: b, codec: .zstd)
                try w.put("bf16.raw", dtype: .bf16, shape: [n], bytes: b, codec: .raw)
            }
            try f16.withUnsafeBytes { try w.put("f16.zstd", dtype: .f16, shape: [n], bytes: $0, codec: .zstd) }
            try f32Half.withUnsafeBytes { try w.put("f32.zstd", dtype: .f32, shape: [n / 2], bytes: $0, codec: .zstd) }
            let small = [UInt8](repeating: 7, count: 4096)
            try small.withUnsafeBytes { try w.put("small.raw", dtype: .u8, shape: [4096], bytes: $0, codec: .raw) }
        }
    }

    deinit { try? FileManager.default.removeItem(atPath: dir) }

    static func normal(count: Int, std: Float) -> [Float] {
        var state: UInt64 = 0x2545_F491_4F6C_DD1D
        func uniform() -> Float {
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            return Float(state >> 40) / Float(1 << 24) + 1e-7
        }
        return (0 ..< count).map { _ in (-2 * log(uniform())).squareRoot() * cos(2 * .pi * uniform()) * std }
    }
}

let bytesPerTensor = Fixture.elementsBF16 * 2

let benchmarks: @Sendable () -> Void = {
    // Regressions show against the committed Thresholds/ (`make bench-check`): wall clock
    // may drift 25% at p50 on a shared 2-core machine; allocations per call may not grow.
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .mallocCountTotal],
        timeUnits: .microseconds, maxDuration: .seconds(2), maxIterations: 5000,
        thresholds: [
            .wallClock: .init(relative: BenchmarkThresholds.Relative.relaxed),
            .mallocCountTotal: .init(relative: [.p50: 0], absolute: [.p50: 2]),
        ])

    // Record decode per codec and dtype, one 4 MiB tensor per iteration.
    for (name, threads) in [("bf16.zstd", 1), ("bf16.zstd", 2), ("f16.zstd", 1), ("f32.zstd", 1), ("bf16.raw", 1)] {
        Benchmark("decode_\(name)_\(threads)t_4MiB") { benchmark in
            let store = Fixture.shared.store
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bytesPerTensor, alignment: 64)
            defer { buffer.deallocate() }
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                try store.read(name, into: buffer, threads: threads)
            }
        }
    }

    // A raw copy without the checksum: the materialize path's floor.
    Benchmark("copy_bf16.raw_unverified_4MiB") { benchmark in
        let store = Fixture.shared.store
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bytesPerTensor, alignment: 64)
        defer { buffer.deallocate() }
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            try store.read("bf16.raw", into: buffer, threads: 1, verify: false)
        }
    }

    // The memcpy baseline for the two above, measured in the same run.
    Benchmark("memcpy_4MiB") { benchmark in
        let a = UnsafeMutableRawBufferPointer.allocate(byteCount: bytesPerTensor, alignment: 64)
        let b = UnsafeMutableRawBufferPointer.allocate(byteCount: bytesPerTensor, alignment: 64)
        defer {
            a.deallocate()
            b.deallocate()
        }
        memset(a.baseAddress!, 3, a.count)
        memset(b.baseAddress!, 4, b.count)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            b.baseAddress!.copyMemory(from: a.baseAddress!, byteCount: a.count)
            blackHole(b.baseAddress)
        }
    }

    // Checksum: a zero-copy read that verifies xxh3-64 over 4 MiB.
    Benchmark("checksum_bf16.raw_4MiB_zero-copy_xxh3") { benchmark in
        let store = Fixture.shared.store
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            try store.withTensor("bf16.raw", verify: true) { b, _ in blackHole(b.baseAddress) }
        }
    }

    // Zero-copy get of a warm tensor: snapshot, lookup, header checks, lend.
    Benchmark("zero-copy_get") { benchmark in
        let store = Fixture.shared.store
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            try store.withTensor("small.raw") { b, _ in blackHole(b.baseAddress) }
        }
    }
}

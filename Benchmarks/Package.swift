// swift-tools-version: 6.1
// Benchmarks live in their own package so that users of the wstore libraries never
// build the benchmark harness or its malloc interposer. Run them with `make bench`.
import PackageDescription

let package = Package(
    name: "wstore-benchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "wstore", path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.0", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "WeightStoreBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "WeightStore", package: "wstore"),
            ],
            path: "Benchmarks/WeightStoreBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        .executableTarget(
            name: "ResidencyBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "WeightStore", package: "wstore"),
            ],
            path: "Benchmarks/ResidencyBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        .executableTarget(
            name: "KVCacheBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "KVCache", package: "wstore"),
            ],
            path: "Benchmarks/KVCacheBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)

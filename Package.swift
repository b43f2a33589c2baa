// swift-tools-version: 6.1
import PackageDescription

// Linux only: the storage core calls Glibc directly (Sources/WStoreCore/Posix.swift stops
// the build elsewhere with #error).
let package = Package(
    name: "wstore",
    products: [
        .library(name: "WeightStore", targets: ["WeightStore"]),
        .library(name: "KVCache", targets: ["KVCache"]),
        .library(name: "WStoreFormats", targets: ["WStoreFormats"]),
        .library(name: "WStoreReplay", targets: ["WStoreReplay"]),
        .executable(name: "wstore", targets: ["wstore"]),
        // libwstore-c.so: the C ABI (include/wstore.h) for engines in C, C++, Python.
        .library(name: "wstore-c", type: .dynamic, targets: ["CWStoreABI"]),
        // The parsers of untrusted bytes, one entry point each, for the libFuzzer harness in Fuzz/.
        .library(name: "WStoreFuzzing", targets: ["WStoreFuzzing"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.6.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
    ],
    targets: [
        // C libraries from Debian -dev packages. Only WStoreCore imports these.
        .systemLibrary(name: "CLMDB", pkgConfig: "lmdb", providers: [.apt(["liblmdb-dev"])]),
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(name: "CXXHash", pkgConfig: "libxxhash", providers: [.apt(["libxxhash-dev"])]),
        // The Redis client library. Only WStoreRemote imports it.
        .systemLibrary(name: "CHiredis", pkgConfig: "hiredis", providers: [.apt(["libhiredis-dev"])]),
        // Numeric kernels (attention scores, float conversions, quantization) with
        // run-time AVX2/AVX-512 dispatch; called only through WStoreKernels.
        .target(name: "CKernels"),
        // Byte-plane split and merge of records (vectorized C); called only by WStoreCore.
        .target(name: "CPlanes"),

        // The storage core: every mdb_*, ZSTD_* and XXH* call, and every POSIX call (Posix.swift), lives here.
        .target(
            name: "WStoreCore",
            dependencies: ["CLMDB", "CZstd", "CXXHash", "CPlanes"]
        ),
        // Swift face of CKernels: SnapKV scores, float conversions, KIVI quantization.
        .target(name: "WStoreKernels", dependencies: ["CKernels"]),
        // Checkpoint formats: safetensors and GGUF readers and writers, expert naming,
        // checkpoint folders. Used by the CLI and the KV cache; engines need not link it.
        .target(name: "WStoreFormats", dependencies: ["WStoreCore"]),
        // What engines link: the weight store, the residency manager and its policies.
        .target(
            name: "WeightStore",
            dependencies: [
                "WStoreCore",
                "WStoreKernels",
                .product(name: "DequeModule", package: "swift-collections"),
            ]
        ),
        // The remote KV tier's client: every redis* call lives here (standalone and Redis Cluster).
        .target(name: "WStoreRemote", dependencies: ["CHiredis"]),
        .target(
            name: "KVCache",
            dependencies: ["WStoreCore", "WStoreKernels", "WStoreFormats", "WStoreRemote"]
        ),
        // Replaying traces: routing traces (real and synthetic), Belady's MIN, the residency
        // simulator, Mooncake KV traces and prefix replay. For the CLI, benches and tests.
        .target(name: "WStoreReplay", dependencies: ["WeightStore", "WStoreCore"]),
        // Command logic lives in a library so tests can run commands in-process.
        .target(
            name: "WStoreCLI",
            dependencies: [
                "WeightStore",
                "KVCache",
                "WStoreCore",
                "WStoreFormats",
                "WStoreKernels",
                "WStoreReplay",
                "WStoreRemote",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ]
        ),
        .executableTarget(name: "wstore", dependencies: ["WStoreCLI"]),
        // Entry points over every parser of untrusted bytes (Fuzz/ runs them under libFuzzer;
        // FuzzRegressionTests replays what fuzzing found).
        .target(name: "WStoreFuzzing", dependencies: ["WStoreCore", "WStoreFormats", "KVCache", "WStoreReplay"]),
        // The C ABI: include/wstore.h (a header-only module, so Swift uses its exact
        // structs) and the @_cdecl exports that implement it.
        .systemLibrary(name: "CWStoreHeader", path: "include"),
        .target(name: "CWStoreABI", dependencies: ["WeightStore", "KVCache", "WStoreCore", "CWStoreHeader"]),

        // What the tests share: temporary directories, the process runner, fixtures, seeded data.
        .target(
            name: "WStoreTestSupport",
            dependencies: ["WStoreCore", "WeightStore", "WStoreRemote"],
            path: "Tests/WStoreTestSupport"
        ),
        .testTarget(name: "WStoreCoreTests", dependencies: ["WStoreCore", "WStoreTestSupport"]),
        .testTarget(
            name: "WStoreFormatsTests",
            dependencies: ["WStoreCore", "WStoreFormats", "WeightStore", "WStoreTestSupport"]),
        .testTarget(
            name: "WeightStoreTests", dependencies: ["WeightStore", "WStoreCore", "WStoreKernels", "WStoreTestSupport"]),
        .testTarget(
            name: "KVCacheTests",
            dependencies: [
                "KVCache", "WStoreCore", "WStoreKernels", "WStoreReplay", "WStoreTestSupport", "WStoreRemote",
            ],
            exclude: ["Fixtures"]
        ),
        .testTarget(
            name: "ResidencyTests", dependencies: ["WeightStore", "WStoreCore", "WStoreReplay", "WStoreTestSupport"]),
        // Every `wstore` command, run in-process.
        .testTarget(
            name: "CLITests",
            dependencies: [
                "WStoreCLI", "WeightStore", "KVCache", "WStoreCore", "WStoreFormats", "WStoreReplay",
                "WStoreTestSupport",
            ],
            exclude: ["Fixtures"]
        ),
        // Replays what fuzzing found through the entry points of WStoreFuzzing.
        .testTarget(name: "FuzzRegressionTests", dependencies: ["WStoreFuzzing"], exclude: ["Inputs"]),
        // Clients/ holds the C program and Python script the tests run against libwstore-c.so.
        .testTarget(
            name: "CABITests",
            dependencies: ["CWStoreABI", "CWStoreHeader", "WeightStore", "KVCache", "WStoreCLI", "WStoreTestSupport"],
            exclude: ["Clients"]
        ),
    ],
    swiftLanguageModes: [.v6]
)

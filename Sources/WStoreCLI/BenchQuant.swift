import ArgumentParser
import Foundation
import WStoreCore
import WStoreFormats
import WeightStore

/// `wstore bench quant`: what each expert variant precision (format-spec/FORMAT.md §8) costs in
/// accuracy and saves in bytes, and how fast it quantizes, beside memcpy and ggml's scalar
/// reference quantizer over the same bytes in the same run.
struct BenchQuant: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "quant",
        abstract: "Bytes, weight error, W·x error and quantize speed of the expert variants (q8_0, q4_0).",
        discussion: """
            Every float tensor of --source whose last dimension is a multiple of 32 is quantized as \
            each precision. Bytes are compared with the lossless tensor (raw, and as the wstore codec \
            stores it); errors are the relative RMS and largest absolute error of the dequantized \
            weights, and the relative error of W·x for random unit x (rank-2 tensors). Quantize speed \
            is MB/s of input on one thread, beside memcpy of the same bytes and ggml's scalar \
            reference code. Without --source, a generated bf16 set (normal, std 0.02) is used.
            """)

    @Option(help: "A safetensors file whose tensors to use.") var source: String?
    @Option(name: .customLong("as"), help: "Convert float tensors to this dtype first: bf16 or keep.") var convert =
        "bf16"
    @Option(name: .customLong("repeat"), help: "Timed repetitions; the median and the range are reported.")
    var repetitions = 5
    @Option(help: "Random unit vectors x per tensor for the W·x error.") var vectors = 4
    @Flag(help: "Print JSON.") var json = false

    func validate() throws {
        guard ["keep", "bf16"].contains(convert) else { throw ValidationError("--as takes bf16 or keep") }
        guard repetitions >= 1, vectors >= 1 else { throw ValidationError("--repeat and --vectors must be ≥ 1") }
    }

    struct Tensor {
        var name: String
        var dtype: DType
        var shape: [Int]
        var bytes: [UInt8]
        var values: [Float]
    }

    struct Row: Encodable {
        var precision: String
        var bytes: Int
        var share_of_raw: Double
        var share_of_lossless_stored: Double
        var relative_rms_error: Double
        var worst_tensor_relative_rms_error: Double
        var max_abs_error: Double
        var wx_relative_error_median: Double
        var wx_relative_error_max: Double
        var quantize_mbps_median: Double
        var quantize_mbps_min: Double
        var quantize_mbps_max: Double
        var quantize_vs_memcpy_time: Double
        var speedup_vs_ggml_reference: Double
        var dequantize_f32_gbps_median: Double
    }

    /// The facts of `bench quant --json`.
    struct Report: Encodable {
        var data: String, tensors: Int, bytes: Int, lossless_stored_bytes: Int, memcpy_gbps: Double
        var repetitions: Int, precisions: [Row]
    }

    func run() throws {
        let report = try makeReport()
        if json {
            try JSONOutput.print(report)
        } else {
            print(report.text)
        }
    }

    /// Measures every precision over the tensors of --source (or the generated set).
    func makeReport() throws -> Report {
        let (tensors, label) = try loadTensors()
        let total = tensors.reduce(0) { $0 + $1.bytes.count }
        guard total > 0 else { throw ValidationError("no float tensor with a last dimension that is a multiple of 32") }
        var options = EncodeOptions()
        options.threads = 1
        let losslessStored = try tensors.reduce(0) { acc, t in
            try acc
                + t.bytes.withUnsafeBytes {
                    try RecordEncoder.encode($0, dtype: t.dtype, shape: t.shape, binding: 0, options: options)
                        .storedSize
                }
        }
        let scratch = UnsafeMutableRawBufferPointer.allocate(
            byteCount: tensors.map(\.bytes.count).max()!, alignment: 64)
        defer { scratch.deallocate() }
        func memcpyAll() -> Double {
            time {
                for t in tensors {
                    t.bytes.withUnsafeBytes {
                        scratch.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: $0.count)
                    }
                }
            }
        }
        _ = memcpyAll()
        let memcpyT = median((0 ..< repetitions).map { _ in memcpyAll() })

        var rows: [Row] = []
        for p in ExpertPrecision.variants {
            // Quantize: the dispatched kernel (timed, repeated) and ggml's scalar reference (once per run,
            // the same bytes expected).
            var blocks: [[UInt8]] = []
            var quantT: [Double] = []
            for _ in 0 ..< repetitions {
                var out: [[UInt8]] = []
                quantT.append(
                    try time {
                        for t in tensors {
                            out.append(
                                try t.bytes.withUnsafeBytes {
                                    try VariantBlocks.quantize($0, dtype: t.dtype, shape: t.shape, precision: p)
                                })
                        }
                    })
                blocks = out
            }
            var refBlocks: [[UInt8]] = []
            let refT = try time {
                for t in tensors {
                    refBlocks.append(
                        try t.bytes.withUnsafeBytes {
                            try VariantQuantizer.quantizeReference($0, dtype: t.dtype, shape: t.shape, precision: p)
                        })
                }
            }
            guard refBlocks == blocks else {
                throw ValidationError("\(p): the kernel's blocks differ from ggml's reference")
            }

            // Errors, from the dequantized f32 values.
            var errSq = 0.0, refSq = 0.0, maxAbs = 0.0, worst = 0.0
            var wx: [Double] = []
            var deqT: [Double] = []
            var rng = SplitMix64(seed: 0x5EED)
            for (t, b) in zip(tensors, blocks) {
                let n = t.values.count
                var deq = [Float](repeating: 0, count: n)
                deqT.append(
                    try time {
                        try b.withUnsafeBytes { src in
                            try deq.withUnsafeMutableBytes {
                                try VariantBlocks.dequantize(src, precision: p, elements: n, into: $0, as: .f32)
                            }
                        }
                    })
                var e2 = 0.0, r2 = 0.0
                for i in 0 ..< n {
                    let d = Double(deq[i]) - Double(t.values[i])
                    e2 += d * d
                    r2 += Double(t.values[i]) * Double(t.values[i])
                    maxAbs = max(maxAbs, abs(d))
                }
                errSq += e2
                refSq += r2
                if r2 > 0 { worst = max(worst, (e2 / r2).squareRoot()) }
                if t.shape.count == 2 {
                    let (rows, cols) = (t.shape[0], t.shape[1])
                    for _ in 0 ..< vectors {
                        // Box-Muller normals, normalized to a unit vector.
                        var x = (0 ..< cols).map { _ in
                            let u1 = max(Double(rng.next() >> 11) / Double(1 << 53), 1e-300)
                            let u2 = Double(rng.next() >> 11) / Double(1 << 53)
                            return (-2 * log(u1)).squareRoot() * cos(2 * .pi * u2)
                        }
                        let norm = x.reduce(0) { $0 + $1 * $1 }.squareRoot()
                        x = x.map { $0 / norm }
                        var num = 0.0, den = 0.0
                        for r in 0 ..< rows {
                            var a = 0.0, q = 0.0
                            let base = r * cols
                            for c in 0 ..< cols {
                                a += Double(t.values[base + c]) * x[c]
                                q += Double(deq[base + c]) * x[c]
                            }
                            num += (q - a) * (q - a)
                            den += a * a
                        }
                        if den > 0 { wx.append((num / den).squareRoot()) }
                    }
                }
            }
            let bytes = blocks.reduce(0) { $0 + $1.count }
            let mbps = quantT.map { Double(total) / $0 / 1e6 }
            rows.append(
                Row(
                    precision: p.name, bytes: bytes, share_of_raw: Double(bytes) / Double(total),
                    share_of_lossless_stored: Double(bytes) / Double(losslessStored),
                    relative_rms_error: refSq > 0 ? (errSq / refSq).squareRoot() : 0,
                    worst_tensor_relative_rms_error: worst, max_abs_error: maxAbs,
                    wx_relative_error_median: median(wx), wx_relative_error_max: wx.max() ?? 0,
                    quantize_mbps_median: median(mbps), quantize_mbps_min: mbps.min()!, quantize_mbps_max: mbps.max()!,
                    quantize_vs_memcpy_time: median(quantT) / memcpyT, speedup_vs_ggml_reference: refT / median(quantT),
                    dequantize_f32_gbps_median: Double(tensors.reduce(0) { $0 + $1.values.count * 4 })
                        / deqT.reduce(0, +) / 1e9))
        }
        return Report(
            data: label, tensors: tensors.count, bytes: total, lossless_stored_bytes: losslessStored,
            memcpy_gbps: Double(total) / memcpyT / 1e9, repetitions: repetitions, precisions: rows)
    }

    private func loadTensors() throws -> ([Tensor], String) {
        guard let source else {
            var rng = SplitMix64(seed: 7)
            let values = rng.bf16Normal(count: 4 << 20, std: 0.02)
            let bytes = values.withUnsafeBytes { Array($0) }
            let t = Tensor(
                name: "generated", dtype: .bf16, shape: [4096, 1024], bytes: bytes,
                values: values.map { Float(bitPattern: UInt32($0) << 16) })
            return ([t], "generated bf16 (normal, std 0.02; no --source given)")
        }
        let file = try SafetensorsFile(path: source)
        var out: [Tensor] = []
        for t in file.tensors {
            guard let dtype = t.dtype, [.f32, .bf16, .f16].contains(dtype), let last = t.shape.last, last % 32 == 0
            else { continue }
            file.withBytes(of: t) { b in
                var values: [Float]
                var bytes: [UInt8]
                var d = dtype
                switch dtype {
                case .f32:
                    values = (0 ..< b.count / 4).map { b.loadUnaligned(fromByteOffset: 4 * $0, as: Float.self) }
                    bytes = Array(b)
                    if convert == "bf16" {
                        // Truncated to bf16, as the MiniLM weights are used (realistic bf16 weights).
                        let words = values.map { UInt16(truncatingIfNeeded: $0.bitPattern >> 16) }
                        values = words.map { Float(bitPattern: UInt32($0) << 16) }
                        bytes = words.withUnsafeBytes { Array($0) }
                        d = .bf16
                    }
                case .f16:
                    values = (0 ..< b.count / 2).map {
                        Float(Float16(bitPattern: b.loadUnaligned(fromByteOffset: 2 * $0, as: UInt16.self)))
                    }
                    bytes = Array(b)
                default:
                    values = (0 ..< b.count / 2).map {
                        Float(bitPattern: UInt32(b.loadUnaligned(fromByteOffset: 2 * $0, as: UInt16.self)) << 16)
                    }
                    bytes = Array(b)
                }
                out.append(Tensor(name: t.name, dtype: d, shape: t.shape, bytes: bytes, values: values))
            }
        }
        let what = convert == "bf16" ? "float tensors truncated to bf16" : "float tensors"
        return (out, "\(source) (\(what), last dimension a multiple of 32)")
    }
}

extension BenchQuant.Report {
    /// The human form: two tables.
    var text: String {
        var out: [String] = []
        out.append(
            "data: \(data): \(tensors) tensors, \(formatBytes(bytes)) (\(formatBytes(lossless_stored_bytes)) stored lossless)"
        )
        out.append(
            TextTable(
                ["precision", "bytes", "of raw", "of stored", "rel RMS err", "max |err|", "W·x err med/max"],
                precisions.map {
                    [
                        $0.precision, formatBytes($0.bytes), String(format: "%.1f%%", $0.share_of_raw * 100),
                        String(format: "%.1f%%", $0.share_of_lossless_stored * 100),
                        String(format: "%.4f", $0.relative_rms_error), String(format: "%.3g", $0.max_abs_error),
                        String(format: "%.4f / %.4f", $0.wx_relative_error_median, $0.wx_relative_error_max),
                    ]
                }
            ).render())
        out.append(
            TextTable(
                [
                    "precision", "quantize MB/s, 1 thread (median, min–max)", "× memcpy time", "× ggml reference speed",
                    "dequantize to f32 GB/s",
                ],
                precisions.map {
                    [
                        $0.precision,
                        String(
                            format: "%.0f (%.0f–%.0f)", $0.quantize_mbps_median, $0.quantize_mbps_min,
                            $0.quantize_mbps_max),
                        String(format: "%.1f", $0.quantize_vs_memcpy_time),
                        String(format: "%.2f", $0.speedup_vs_ggml_reference),
                        String(format: "%.2f", $0.dequantize_f32_gbps_median),
                    ]
                }
            ).render())
        return out.joined(separator: "\n")
    }
}

import ArgumentParser
import Foundation
import KVCache

/// `wstore kv compress`: SnapKV selection and KIVI quantization of a KV safetensors file.
struct KVCompress: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compress",
        abstract: "Select (SnapKV) and compress (lossless or KIVI int8/int4/int2) a KV safetensors file.",
        discussion: """
            Input tensors: layers.{l}.keys and layers.{l}.values [kv_heads, tokens, head_dim], and \
            layers.{l}.queries [q_heads, window, head_dim] for --snapkv. Output: the kept keys and \
            values under the same names (as the codec reconstructs them) and layers.{l}.kept \
            (int32 [heads, kept], ascending positions). Sizes are those of the store's chunk records.
            """)

    @Option(help: "The KV safetensors file to read.") var input: String
    @Option(help: "The safetensors file to write.") var output: String
    @Option(help: "SnapKV selection: window=32,capacity=2048,kernel=7,pool=max|avg,heads=query|kv (any subset).")
    var snapkv: String?
    @Option(help: "lossless, int8, int4 or int2.") var codec: KVCodec = .lossless
    @Option(help: "Quantization group size.") var group = 64
    @Option(help: "Newest tokens kept in full precision by the int codecs.") var residual = 0
    @Option(help: "Threads.") var threads = 1
    @Flag(help: "Print JSON.") var json = false

    func validate() throws {
        guard group > 0, residual >= 0, threads >= 1 else {
            throw ValidationError("--group and --threads must be ≥ 1, --residual ≥ 0")
        }
        if let snapkv { _ = try snapConfig(snapkv) }
    }

    func snapConfig(_ text: String) throws -> SnapKV.Config {
        var c = SnapKV.Config()
        for (k, v) in try parseKeyValues(text, option: "--snapkv") {
            switch k {
            case "window":
                guard let n = Int(v) else { throw ValidationError("--snapkv window=\(v): not a number") }
                c.window = n
            case "capacity":
                guard let n = Int(v) else { throw ValidationError("--snapkv capacity=\(v): not a number") }
                c.capacity = n
            case "kernel":
                guard let n = Int(v) else { throw ValidationError("--snapkv kernel=\(v): not a number") }
                c.kernel = n
            case "pool":
                guard let p = SnapKV.Pooling(rawValue: v) else {
                    throw ValidationError("--snapkv pool takes max or avg")
                }
                c.pooling = p
            case "heads":
                guard let h = SnapKV.Heads(rawValue: v) else {
                    throw ValidationError("--snapkv heads takes query or kv")
                }
                c.heads = h
            default: throw ValidationError("--snapkv: unknown key \(k) (window, capacity, kernel, pool, heads)")
            }
        }
        do { try c.validate() } catch { throw ValidationError("\(error)") }
        return c
    }

    struct LayerReport: Codable {
        var layer: Int
        var tokens: Int
        var kept: Int
        var rawBytes: Int
        var keptRawBytes: Int
        var storedBytes: Int
        var maxAbsError: Double
        var relativeRMSError: Double
        var snapkvMilliseconds: Double?
    }

    /// The layer numbers of the `layers.{l}.keys` tensors of `file`, ascending.
    /// - Throws: ``ImportError`` naming the input for a layer number written any other way
    ///   than plain decimal (`layers.00.keys`, `layers.+1.keys`), which no other tensor name would match.
    func layerNumbers(_ names: some Sequence<String>) throws(ImportError) -> [Int] {
        var layers: [Int] = []
        for name in names where name.hasPrefix("layers.") && name.hasSuffix(".keys") {
            let digits = name.dropFirst("layers.".count).dropLast(".keys".count)
            guard let l = Int(digits), l >= 0, String(l) == digits else {
                throw ImportError(
                    file: input,
                    "tensor \(name.quoted): the layer must be a number without leading zeros (layers.{l}.keys)")
            }
            layers.append(l)
        }
        return layers.sorted()
    }

    func run() throws {
        let file = try KVSafetensors.read(path: input)
        let layers = try layerNumbers(file.keys)
        // Problems with what the file holds are the input's, named by it: one line, exit 1.
        func bad(_ why: String) -> ImportError { ImportError(file: input, why) }
        func tensor(_ name: String) throws(ImportError) -> KVTensor? {
            guard let t = file[name] else { return nil }
            do { return try t.kvTensor(name: name) } catch { throw bad("\(error)") }
        }
        guard !layers.isEmpty else { throw bad("holds no layers.{l}.keys tensors") }
        let config = try snapkv.map(snapConfig)
        var out: [String: KVSafetensors.Tensor] = [:]
        var reports: [LayerReport] = []
        for l in layers {
            guard let keys = try tensor("layers.\(l).keys") else { throw bad("lacks layers.\(l).keys") }
            guard let values = try tensor("layers.\(l).values") else { throw bad("lacks layers.\(l).values") }
            do { _ = try KVLayer(keys: keys, values: values) } catch { throw bad("layer \(l): \(error)") }
            var keptKeys = keys, keptValues = values
            var kept: [[Int32]] = Array(repeating: (0 ..< keys.tokens).map { Int32($0) }, count: keys.heads)
            var snapMs: Double?
            if let config {
                guard let queries = try tensor("layers.\(l).queries") else {
                    throw bad("--snapkv needs layers.\(l).queries [q_heads, window, head_dim]")
                }
                let timed: ([[Int32]], Double)
                do {
                    timed = try kvTime {
                        try SnapKV.select(queries: queries, keys: keys, config: config, threads: threads)
                    }
                } catch let error as WStoreError {
                    throw bad("layer \(l): \(error)")
                }
                kept = timed.0
                snapMs = timed.1 * 1000
                keptKeys = try keys.gather(positions: kept)
                keptValues = try values.gather(positions: kept)
            }
            let layer = try KVCacheData(layers: [KVLayer(keys: keptKeys, values: keptValues)])
            let chunk = try KVChunk.encode(
                layer, key: UInt64(l), codec: codec, kivi: KIVIOptions(group: group, residual: residual),
                threads: threads)
            let back = try chunk.withUnsafeBytes {
                try KVChunk.decode($0, key: UInt64(l), name: "layer \(l)", threads: threads)
            }.layers[0]
            let ek = KVError.measure(keptKeys, back.keys), ev = KVError.measure(keptValues, back.values)
            // Relative RMS over keys and values together.
            let nk = norm2(keptKeys), nv = norm2(keptValues)
            let rel =
                ((ek.relativeRMS * ek.relativeRMS * nk + ev.relativeRMS * ev.relativeRMS * nv)
                / max(nk + nv, .leastNonzeroMagnitude)).squareRoot()
            out["layers.\(l).keys"] = KVSafetensors.tensor(back.keys)
            out["layers.\(l).values"] = KVSafetensors.tensor(back.values)
            out["layers.\(l).kept"] = KVSafetensors.positions(kept)
            reports.append(
                LayerReport(
                    layer: l, tokens: keys.tokens, kept: kept[0].count,
                    rawBytes: keys.bytes.count + values.bytes.count,
                    keptRawBytes: keptKeys.bytes.count + keptValues.bytes.count,
                    storedBytes: chunk.count, maxAbsError: max(ek.maxAbs, ev.maxAbs),
                    relativeRMSError: rel, snapkvMilliseconds: snapMs))
        }
        var meta = ["codec": codec.rawValue, "written_by": "wstore kv compress"]
        if let config {
            meta["snapkv"] =
                "window=\(config.window),capacity=\(config.capacity),kernel=\(config.kernel),pool=\(config.pooling.rawValue),heads=\(config.heads.rawValue)"
        }
        try KVSafetensors.write(out, to: output, metadata: meta)
        let raw = reports.reduce(0) { $0 + $1.rawBytes }, stored = reports.reduce(0) { $0 + $1.storedBytes }
        let maxErr = reports.map(\.maxAbsError).max() ?? 0
        let rms =
            (reports.map { $0.relativeRMSError * $0.relativeRMSError }.reduce(0, +) / Double(max(reports.count, 1)))
            .squareRoot()
        if json {
            struct Summary: Codable {
                var input: String, output: String, codec: String, snapkv: String?
                var rawBytes: Int, storedBytes: Int, ratio: Double, maxAbsError: Double, relativeRMSError: Double
                var layers: [LayerReport]
            }
            let s = Summary(
                input: input, output: output, codec: codec.rawValue, snapkv: meta["snapkv"], rawBytes: raw,
                storedBytes: stored, ratio: Double(raw) / Double(max(stored, 1)), maxAbsError: maxErr,
                relativeRMSError: rms, layers: reports)
            try JSONOutput.print(s)
            return
        }
        var rows = reports.map { r in
            [
                String(r.layer), "\(r.kept)/\(r.tokens)", formatBytes(r.rawBytes), formatBytes(r.storedBytes),
                String(format: "%.2fx", Double(r.rawBytes) / Double(max(r.storedBytes, 1))),
                String(format: "%.4g", r.maxAbsError), String(format: "%.4f", r.relativeRMSError),
                r.snapkvMilliseconds.map { String(format: "%.1f", $0) } ?? "-",
            ]
        }
        rows.append([
            "total", "", formatBytes(raw), formatBytes(stored),
            String(format: "%.2fx", Double(raw) / Double(max(stored, 1))),
            String(format: "%.4g", maxErr), String(format: "%.4f", rms), "",
        ])
        print(
            "codec \(codec.rawValue)" + (meta["snapkv"].map { ", SnapKV \($0)" } ?? ", no SnapKV")
                + "; ratio = input bytes / stored bytes; error of the kept tokens")
        print(
            TextTable(
                ["layer", "kept/tokens", "input", "stored", "ratio", "max abs err", "rel RMS", "SnapKV ms"], rows
            ).render())
        print("wrote \(output)")
    }

    private func norm2(_ t: KVTensor) -> Double { t.floats().reduce(0.0) { $0 + Double($1) * Double($1) } }
}

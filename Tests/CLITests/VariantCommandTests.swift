import Foundation
import Testing
import WStoreFormats
import WStoreTestSupport
import WeightStore

@testable import WStoreCLI
@testable import WStoreCore

/// `wstore pack --expert-variants` and the variants it stores (format-spec/FORMAT.md §8),
/// checked against numpy (scripts/fixtures/check_variants.py).
@Suite struct VariantCommandTests {
    /// Writes every variant of `model` as `<tensor>@<precision>.bin` (its blocks, read back
    /// checksum-checked) and `.f32` (dequantized by wstore) into `dir`.
    func dumpVariants(_ store: String, model: String, into dir: String) throws -> Int {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let s = try WeightStore.open(at: store)
        let experts = try s.experts(model: model)
        var n = 0
        for v in try s.variants(model: model) {
            let entry = try #require(experts.first { $0.layer == v.key.layer && $0.expert == v.key.expert })
            let tensor = try #require(entry.parts[v.key.part])
            let blocks = try s.readVariantBytes(v.precision, of: v.key, model: model)
            var dense = [UInt8](repeating: 0, count: v.elements * 4)
            try blocks.withUnsafeBytes { b in
                try dense.withUnsafeMutableBytes {
                    try VariantBlocks.dequantize(b, precision: v.precision, elements: v.elements, into: $0, as: .f32)
                }
            }
            try Data(blocks).write(to: URL(fileURLWithPath: "\(dir)/\(tensor)@\(v.precision).bin"))
            try Data(dense).write(to: URL(fileURLWithPath: "\(dir)/\(tensor)@\(v.precision).f32"))
            n += 1
        }
        return n
    }

    func checkVariants(_ args: [String]) throws -> String {
        try runPython([repositoryRoot + "/scripts/fixtures/check_variants.py"] + args)
    }

    @Test func everyVariantMatchesNumpyBitForBitAndStaysWithinItsBound() throws {
        let dir = TemporaryDirectory()
        let src = fixtures + "/mixtral/model.safetensors"
        try wstore("pack", src, "-o", dir.sub("s.wstore"), "--model", "m", "--expert-variants", "int8,int4", "--quiet")
        // 2 layers x 4 experts x 3 parts, each in two precisions.
        #expect(try dumpVariants(dir.sub("s.wstore"), model: "m", into: dir.sub("dump")) == 2 * 4 * 3 * 2)
        let out = try checkVariants(["roundtrip", src, dir.sub("dump")])
        #expect(out.hasPrefix("ok 48 variants"), "\(out)")
    }

    @Test func anMoELayerWithQ8ExpertsStaysWithinOnePercentOfTheExactForward() throws {
        let dir = TemporaryDirectory()
        let src = fixtures + "/mixtral/model.safetensors"
        try wstore("pack", src, "-o", dir.sub("s.wstore"), "--model", "m", "--expert-variants", "q8_0,q4_0", "--quiet")
        _ = try dumpVariants(dir.sub("s.wstore"), model: "m", into: dir.sub("dump"))
        let lines = try checkVariants(["forward", src, dir.sub("dump"), "0"]).split(separator: "\n")
        var errors: [String: Double] = [:]
        for l in lines {
            let f = l.split(separator: " ")
            if f.count == 2, let e = Double(f[1]) { errors[String(f[0])] = e }
        }
        let q8 = try #require(errors["q8_0"]), q4 = try #require(errors["q4_0"])
        // The stated bounds (format-spec/FORMAT.md §8): q8_0 within 1% of the exact layer output,
        // q4_0 within 15%; and the finer precision is the closer one.
        #expect(q8 < 0.01, "q8_0 relative error \(q8)")
        #expect(q4 < 0.15, "q4_0 relative error \(q4)")
        #expect(q8 < q4)
    }

    @Test func aStoreWithVariantsHoldsTheSameTensorsAndIndexAsOneWithout() throws {
        let dir = TemporaryDirectory()
        let src = fixtures + "/mixtral/model.safetensors"
        try wstore("pack", src, "-o", dir.sub("plain.wstore"), "--model", "m", "--quiet")
        try wstore("pack", src, "-o", dir.sub("v.wstore"), "--model", "m", "--expert-variants", "q8_0,q4_0", "--quiet")
        // A reader of revision 2.0 opens only meta, tensors and experts: every key and value of
        // the last two is the same byte for byte, so it reads the store as it reads one without.
        func entries(_ path: String, _ db: String) throws -> [[UInt8]: [UInt8]] {
            let env = try LMDBEnvironment.shared(path: path, readOnly: true)
            let d = try env.database(db)
            return try env.withRead { txn in
                var out: [[UInt8]: [UInt8]] = [:]
                try txn.scan(d, prefix: []) { k, v in
                    out[Array(k)] = Array(v)
                    return true
                }
                return out
            }
        }
        for db in ["tensors", "experts"] {
            let a = try entries(dir.sub("plain.wstore"), db), b = try entries(dir.sub("v.wstore"), db)
            #expect(!a.isEmpty && a == b, "\(db)")
        }
        #expect(try WeightStore.open(at: dir.sub("v.wstore")).metadata().formatVersion == 2)
        // And export of the lossless model is byte-identical to the source.
        try wstore("export", dir.sub("v.wstore"), "-o", dir.sub("out.safetensors"), "--quiet")
        let check = pythonCheck("safetensors", src, dir.sub("out.safetensors"))
        #expect(check.status == 0, "\(check.output)")
        try wstore("verify", dir.sub("v.wstore"))
    }

    @Test(arguments: ["int3", "q8_0,bogus", "", "exact", "q8_0,,q4_0"])
    func badExpertVariantValuesFailWithOneLineAndWriteNothing(_ value: String) throws {
        let dir = TemporaryDirectory()
        do {
            try wstore(
                "pack", fixtures + "/mixtral/model.safetensors", "-o", dir.sub("s.wstore"), "--expert-variants", value,
                "--quiet")
            Issue.record("--expert-variants '\(value)' was accepted")
        } catch let e as WStoreError {
            let line = "\(e)"
            #expect(!line.contains("\n") && line.contains("q8_0"), "\(line)")
        }
        #expect(!FileManager.default.fileExists(atPath: dir.sub("s.wstore")))
    }

    @Test func ggufExpertsAlreadyInQ8KeepTheirTypeAndGetNoVariant() throws {
        let dir = TemporaryDirectory()
        try wstore(
            "pack", fixtures + "/moe.gguf", "-o", dir.sub("g.wstore"), "--model", "g", "--expert-variants", "q8_0,q4_0",
            "--quiet")
        let s = try WeightStore.open(at: dir.sub("g.wstore"))
        let byName = Dictionary(uniqueKeysWithValues: try s.tensors(model: "g").map { ($0.name, $0) })
        var checked = 0
        for e in try s.experts(model: "g") {
            for (part, tensor) in e.parts {
                let info = try #require(byName[tensor])
                let have = try s.precisions(layer: e.layer, expert: e.expert, part: part, model: "g")
                if info.dtype == .q8_0 {
                    #expect(have == [.exact], "\(tensor)")  // its lossless record is the Q8_0 blocks
                } else if [.f32, .f16].contains(info.dtype) {
                    #expect(have == [.exact, .q8_0, .q4_0], "\(tensor)")
                }
                checked += 1
            }
        }
        #expect(checked > 0)
        #expect(byName.values.contains { $0.dtype == .q8_0 })
        let report = try InspectReport.build(
            s, path: dir.sub("g.wstore"), only: "g", tensors: false, experts: false, largest: 0)
        let reasons = report.models[0].parts_without_variants
        #expect(reasons.contains { $0.reason.contains("is not f32, f16 or bf16") }, "\(reasons)")
    }

    @Test func benchQuantReportsEveryPrecisionBesideTheLosslessBytes() throws {
        let bench = try #require(
            try WStoreCommand.parseAsRoot(
                [
                    "bench", "quant", "--source", fixtures + "/mixtral/model.safetensors", "--as", "keep", "--repeat",
                    "1", "--vectors", "2", "--json",
                ]) as? BenchQuant)
        let report = try bench.makeReport()
        #expect(report.precisions.map(\.precision) == ["q8_0", "q4_0"])
        let (q8, q4) = (report.precisions[0], report.precisions[1])
        // bf16 weights: 34 and 18 bytes per 32 elements of 64 bytes, whatever the weights are.
        #expect(q8.share_of_raw == 34.0 / 64 && q4.share_of_raw == 18.0 / 64)
        #expect(
            q8.relative_rms_error > 0 && q8.relative_rms_error < 0.01 && q4.relative_rms_error > q8.relative_rms_error)
        #expect(q8.wx_relative_error_median > 0 && q8.wx_relative_error_median < q4.wx_relative_error_median)
        #expect(q8.quantize_mbps_median > 0 && q8.speedup_vs_ggml_reference > 0)
        #expect(report.text.contains("q4_0"))
    }
}

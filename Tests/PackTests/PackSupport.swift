import Foundation
@testable import WStoreCLI
import WeightStore

/// The repository root (this file is Tests/PackTests/PackSupport.swift).
let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().path

/// The Python the Makefile set up (its virtual environment), else python3 from PATH.
let python = ProcessInfo.processInfo.environment["WSTORE_PYTHON"] ?? "python3"

/// The fixtures, written once per test run by scripts/fixtures/make_fixtures.py with the
/// real safetensors, numpy and gguf packages (`make pydeps` installs them).
/// They are removed when the test process exits.
let fixtures: String = {
    let (status, out) = runProcess("/usr/bin/env", [python, repoRoot + "/scripts/fixtures/make_fixtures.py", fixturesDir])
    atexit { try? FileManager.default.removeItem(atPath: fixturesDir) }
    precondition(status == 0, "make_fixtures.py failed (run `make pydeps`): \(out)")
    return fixturesDir
}()

private let fixturesDir = FileManager.default.temporaryDirectory.appendingPathComponent("wstore-fixtures-\(getpid())").path

/// Runs `exe` with `args`; returns its exit status and its stdout and stderr together.
@discardableResult
func runProcess(_ exe: String, _ args: [String]) -> (status: Int32, output: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: exe)
    p.arguments = args
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = pipe
    do { try p.run() } catch { return (-1, "\(error)") }
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: data, as: UTF8.self))
}

/// Runs a `wstore` command line in this process.
func wstore(_ args: String...) throws {
    var cmd = try WStoreCommand.parseAsRoot(args)
    try cmd.run()
}

/// Checks an export against its source with the Python packages (scripts/fixtures/check_export.py).
func pythonCheck(_ mode: String, _ source: String, _ exported: String) -> (status: Int32, output: String) {
    runProcess("/usr/bin/env", [python, repoRoot + "/scripts/fixtures/check_export.py", mode, source, exported])
}

/// A fresh temporary directory, removed when the value is released.
final class Scratch {
    let path: String
    init() {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("wstore-pack-\(UUID().uuidString)").path
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
    func sub(_ name: String) -> String { path + "/" + name }

    /// Entries of the directory (staging directories start with a dot).
    var entries: [String] { ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted() }
}

/// Every tensor of `model`: name → (info, bytes).
func contents(of store: String, model: String) throws -> [String: (TensorInfo, [UInt8])] {
    let s = try WeightStore.open(at: store)
    var out: [String: (TensorInfo, [UInt8])] = [:]
    for t in try s.tensors(model: model) { out[t.name] = (t, try s.readBytes(t.name, model: model)) }
    return out
}

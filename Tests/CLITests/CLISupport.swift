import Foundation
import WStoreTestSupport
import WeightStore

@testable import WStoreCLI

/// Runs a `wstore` command line in this process.
func wstore(_ args: String...) throws {
    var cmd = try WStoreCommand.parseAsRoot(args)
    try cmd.run()
}

/// The message of the usage error `wstore args` stops with before running (exit code 64),
/// or `nil` when the arguments parse.
func usageError(_ args: [String]) -> String? {
    do {
        _ = try WStoreCommand.parseAsRoot(args)
        return nil
    } catch {
        let code = WStoreCommand.exitCode(for: error)
        return code == .validationFailure ? WStoreCommand.message(for: error) : "exit code \(code.rawValue): \(error)"
    }
}

/// Checks an export against its source with the Python packages (scripts/fixtures/check_export.py).
func pythonCheck(_ mode: String, _ source: String, _ exported: String) -> ProcessResult {
    runProcess(
        "/usr/bin/env",
        [pythonExecutable, repositoryRoot + "/scripts/fixtures/check_export.py", mode, source, exported])
}

/// Every tensor of `model`: name → (info, bytes).
func contents(of store: String, model: String) throws -> [String: (TensorInfo, [UInt8])] {
    let s = try WeightStore.open(at: store)
    var out: [String: (TensorInfo, [UInt8])] = [:]
    for t in try s.tensors(model: model) { out[t.name] = (t, try s.readBytes(t.name, model: model)) }
    return out
}

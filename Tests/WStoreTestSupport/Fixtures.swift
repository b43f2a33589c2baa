import Foundation

/// The checkpoint fixtures, written once per test process by scripts/fixtures/make_fixtures.py
/// with the real safetensors, numpy and gguf packages (`make pydeps` installs them), and
/// removed when the process exits.
package let fixtures: String = {
    let r = runProcess(
        "/usr/bin/env", [pythonExecutable, repositoryRoot + "/scripts/fixtures/make_fixtures.py", fixturesDir])
    atexit { try? FileManager.default.removeItem(atPath: fixturesDir) }
    precondition(r.status == 0, "make_fixtures.py failed (run `make pydeps`): \(r.output)")
    return fixturesDir
}()

private let fixturesDir = FileManager.default.temporaryDirectory
    .appendingPathComponent("wstore-fixtures-\(ProcessInfo.processInfo.processIdentifier)").path

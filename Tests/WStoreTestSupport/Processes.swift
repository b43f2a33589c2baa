import Foundation

/// What a child process did.
package struct ProcessResult: Sendable {
    /// Its exit status; -1 when it could not be started.
    package var status: Int32
    /// Its standard output, and its standard error too unless asked apart.
    package var output: String
    /// Its standard error when asked apart, else empty.
    package var errors: String
}

/// Runs `executable` with `arguments` and waits for it. Standard error goes into
/// ``ProcessResult/output`` with standard output, or into ``ProcessResult/errors`` when
/// `separateErrors`.
package func runProcess(
    _ executable: String, _ arguments: [String], separateErrors: Bool = false,
    environment: [String: String]? = nil
) -> ProcessResult {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable)
    p.arguments = arguments
    if let environment {
        p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    }
    let out = Pipe(), err = separateErrors ? Pipe() : nil
    p.standardOutput = out
    p.standardError = err ?? out
    do { try p.run() } catch { return ProcessResult(status: -1, output: "\(error)", errors: "") }
    let data = out.fileHandleForReading.readDataToEndOfFile()
    let errData = err?.fileHandleForReading.readDataToEndOfFile() ?? Data()
    p.waitUntilExit()
    return ProcessResult(
        status: p.terminationStatus, output: String(decoding: data, as: UTF8.self),
        errors: String(decoding: errData, as: UTF8.self))
}

/// The Python the tests run: the Makefile's virtual environment (`WSTORE_PYTHON`, which has
/// numpy, safetensors, gguf and ml_dtypes), else `python3` from PATH.
package let pythonExecutable = ProcessInfo.processInfo.environment["WSTORE_PYTHON"] ?? "python3"

/// A Python run that failed: its arguments and what it wrote to standard error.
package struct PythonError: Error, CustomStringConvertible {
    package var arguments: [String]
    package var errors: String
    package var description: String { "\(pythonExecutable) \(arguments.joined(separator: " ")) failed: \(errors)" }
}

/// Runs ``pythonExecutable`` with `arguments` and returns its standard output.
/// - Throws: ``PythonError`` when it exits non-zero.
package func runPython(_ arguments: [String]) throws -> String {
    let r = runProcess("/usr/bin/env", [pythonExecutable] + arguments, separateErrors: true)
    guard r.status == 0 else { throw PythonError(arguments: arguments, errors: r.errors + r.output) }
    return r.output
}

/// The C compiler on PATH (`cc`, `clang` or `gcc`).
package let cCompiler: String = {
    let dirs = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin").split(separator: ":").map(String.init)
    for name in ["cc", "clang", "gcc"] {
        for d in dirs where FileManager.default.isExecutableFile(atPath: d + "/" + name) { return d + "/" + name }
    }
    return "/usr/bin/cc"
}()

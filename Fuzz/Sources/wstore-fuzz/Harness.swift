import Foundation
import WStoreFuzzing

// One libFuzzer binary for every parser: WSTORE_FUZZ_TARGET names the one to fuzz
// (safetensors, gguf, record, kv, routing-trace, mooncake). With WSTORE_FUZZ_SEEDS=DIR
// it writes that target's seeds into DIR and exits instead.

nonisolated(unsafe) private var target: FuzzTarget = .safetensors

@_cdecl("LLVMFuzzerInitialize")
public func fuzzerInitialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    let env = ProcessInfo.processInfo.environment
    guard let name = env["WSTORE_FUZZ_TARGET"], let t = FuzzTarget(rawValue: name) else {
        let names = FuzzTarget.allCases.map(\.rawValue).joined(separator: ", ")
        FileHandle.standardError.write(Data("wstore-fuzz: set WSTORE_FUZZ_TARGET to one of \(names)\n".utf8))
        exit(2)
    }
    target = t
    if let dir = env["WSTORE_FUZZ_SEEDS"] {
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            for (i, seed) in try t.seeds().enumerated() {
                try Data(seed).write(to: URL(fileURLWithPath: "\(dir)/wstore-seed-\(i)"))
            }
        } catch {
            FileHandle.standardError.write(Data("wstore-fuzz: cannot write seeds: \(error)\n".utf8))
            exit(1)
        }
        exit(0)
    }
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    target.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

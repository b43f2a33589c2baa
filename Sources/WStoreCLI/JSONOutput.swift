import Foundation

/// The one way the CLI writes `--json`: a `Codable` report, keys sorted, slashes unescaped,
/// indented.
enum JSONOutput {
    /// The encoder for every `--json` report.
    static var encoder: JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return e
    }

    /// Prints `value` as JSON on stdout.
    static func print<T: Encodable>(_ value: T) throws {
        Swift.print(String(decoding: try encoder.encode(value), as: UTF8.self))
    }
}

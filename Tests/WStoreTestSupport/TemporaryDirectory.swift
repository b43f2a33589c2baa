import Foundation

/// A fresh directory under the system's temporary directory, removed with everything in it
/// when the value is released.
package final class TemporaryDirectory: Sendable {
    /// The directory's path.
    package let path: String

    /// Makes `wstore-<tag>-<uuid>` in the temporary directory.
    package init(_ tag: String = "test") {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("wstore-\(tag)-\(UUID().uuidString)").path
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    /// The path of `name` inside the directory.
    package func sub(_ name: String) -> String { path + "/" + name }

    /// The names in the directory, sorted (staging directories start with a dot).
    package var entries: [String] { ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted() }
}

import ArgumentParser
import Foundation

/// Output helpers shared by `wstore trace synth` and `wstore bench cache`.
enum CacheBenchFormat {
    /// Parses `A,B` into two numbers.
    static func pair(_ text: String, _ option: String) throws -> (Double, Double) {
        let parts = text.split(separator: ",").map { Double($0.trimmingCharacters(in: .whitespaces)) }
        guard parts.count == 2, let a = parts[0], let b = parts[1] else {
            throw ValidationError("\(option) takes two numbers as A,B, got \(text)")
        }
        return (a, b)
    }

    /// A fraction as a percentage with one decimal.
    static func pct(_ v: Double) -> String { String(format: "%.1f%%", v * 100) }

    /// Prints rows as a table (``Table``), the first row its header.
    static func table(_ rows: [[String]]) {
        guard let first = rows.first else { return }
        print(TextTable(first, Array(rows.dropFirst())).render())
    }
}

import Foundation

/// A plain-text table: a header row, a rule, and rows; numeric-looking columns right-aligned.
struct TextTable {
    var headers: [String]
    var rows: [[String]] = []

    init(_ headers: String...) { self.headers = headers }

    /// A table with all its rows at once.
    init(_ headers: [String], _ rows: [[String]]) {
        self.headers = headers
        self.rows = rows
    }

    mutating func add(_ cells: String...) { rows.append(cells) }

    /// The table as lines, each cell padded to its column's width.
    func render(indent: String = "") -> String {
        var widths = headers.map(\.count)
        for r in rows { for (i, c) in r.enumerated() where i < widths.count { widths[i] = max(widths[i], c.count) } }
        let numeric = headers.indices.map { i in
            !rows.isEmpty
                && rows.allSatisfy {
                    i < $0.count && ($0[i].first.map { $0.isNumber || $0 == "-" || $0 == "—" } ?? true)
                }
        }
        func line(_ cells: [String]) -> String {
            var parts: [String] = []
            for (i, w) in widths.enumerated() {
                let c = i < cells.count ? cells[i] : ""
                let pad = String(repeating: " ", count: w - c.count)
                parts.append(numeric[i] ? pad + c : c + pad)
            }
            return indent + parts.joined(separator: "  ").replacing(/\s+$/, with: "")
        }
        var out = [line(headers), indent + widths.map { String(repeating: "-", count: $0) }.joined(separator: "  ")]
        out += rows.map(line)
        return out.joined(separator: "\n")
    }
}

/// A compression ratio as `3.214x`.
func formatRatio(raw: Int, stored: Int) -> String {
    stored == 0 ? "-" : String(format: "%.3fx", Double(raw) / Double(stored))
}

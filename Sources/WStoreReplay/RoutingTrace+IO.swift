import Foundation
import WStoreCore
import WeightStore

extension RoutingTrace {
    private struct TokenLine: Decodable {
        var req: Int?
        var tok: Int?
        var experts: [[Int]]
        var predicted: [[Int]?]?
        var scores: [[[Double]]?]?
    }

    /// Reads a routing trace from JSON Lines text.
    /// - Throws: ``RoutingTraceError`` naming the first bad line.
    public static func parse(_ data: Data) throws -> RoutingTrace {
        let decoder = JSONDecoder()
        var trace: RoutingTrace?
        var lineNumber = 0
        var start = data.startIndex
        while start < data.endIndex {
            let end = data[start...].firstIndex(of: UInt8(ascii: "\n")) ?? data.endIndex
            lineNumber += 1
            let line = data[start ..< end]
            start = end < data.endIndex ? data.index(after: end) : end
            if line.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }) { continue }
            if trace == nil {
                trace = RoutingTrace(header: try parseHeader(line, line: lineNumber))
                continue
            }
            let token: TokenLine
            do { token = try decoder.decode(TokenLine.self, from: line) } catch {
                throw RoutingTraceError.malformed(line: lineNumber, "not a token line: \(describe(error))")
            }
            do {
                let scores = try token.scores.map { layers in
                    try layers.enumerated().map { l, pairs in
                        try pairs.map { pairs in
                            try pairs.map { pair -> (expert: Int, probability: Double) in
                                guard pair.count == 2, pair[0] == pair[0].rounded(), abs(pair[0]) < 1e9 else {
                                    throw RoutingTraceError.malformed(
                                        line: 0,
                                        "\"scores\"[\(l)] holds an entry that is not an [expert, probability] pair")
                                }
                                return (Int(pair[0]), pair[1])
                            }
                        }
                    }
                }
                try trace!.append(
                    request: token.req ?? 0, experts: token.experts, predicted: token.predicted, scores: scores)
            } catch RoutingTraceError.malformed(_, let reason) {
                throw RoutingTraceError.malformed(line: lineNumber, reason)
            }
        }
        guard let trace else { throw RoutingTraceError.empty }
        return trace
    }

    /// Reads the routing trace in file `path`.
    /// - Throws: ``RoutingTraceError``, or ``WStoreError/io(call:path:errno:)`` when the
    ///   file cannot be read.
    public static func load(path: String) throws -> RoutingTrace {
        try parse(Data(try Posix.readFile(path)))
    }

    private static func parseHeader(_ line: Data, line n: Int) throws -> Header {
        guard let object = try? JSONSerialization.jsonObject(with: line) as? [String: Any] else {
            throw RoutingTraceError.malformed(line: n, "the header is not a JSON object")
        }
        guard object["kind"] as? String == kind else {
            throw RoutingTraceError.malformed(line: n, "the header's \"kind\" is not \"\(kind)\"")
        }
        guard let version = object["version"] as? Int else {
            throw RoutingTraceError.malformed(line: n, "the header has no integer \"version\"")
        }
        guard version <= 1 else { throw RoutingTraceError.newerVersion(version) }
        func positive(_ key: String) throws -> Int {
            guard let v = object[key] as? Int, v > 0 else {
                throw RoutingTraceError.malformed(line: n, "the header's \"\(key)\" must be a positive integer")
            }
            return v
        }
        let header = Header(
            layers: try positive("layers"), experts: try positive("experts"), topK: try positive("top_k"),
            expertBytes: object["expert_bytes"] as? Int, model: object["model"] as? String,
            note: object["note"] as? String)
        guard header.topK <= header.experts else {
            throw RoutingTraceError.malformed(line: n, "the header's \"top_k\" exceeds \"experts\"")
        }
        if let b = header.expertBytes, b < 0 {
            throw RoutingTraceError.malformed(line: n, "the header's \"expert_bytes\" is negative")
        }
        let (cells, overflow) = header.layers.multipliedReportingOverflow(by: header.experts)
        guard !overflow, cells <= 1 << 24 else {
            throw RoutingTraceError.malformed(line: n, "the header's layers × experts is too large")
        }
        return header
    }

    private static func describe(_ error: any Error) -> String {
        switch error {
        case DecodingError.keyNotFound(let key, _): "missing \"\(key.stringValue)\""
        case DecodingError.typeMismatch(_, let c), DecodingError.valueNotFound(_, let c):
            "wrong type at \(c.codingPath.map { $0.intValue.map(String.init) ?? $0.stringValue }.joined(separator: "."))"
        case DecodingError.dataCorrupted: "not valid JSON"
        default: "\(error)"
        }
    }

    /// The trace as JSON Lines text (header first), as ``parse(_:)`` reads it.
    public func jsonLines() throws -> Data {
        var out = Data()
        out.append(try JSONEncoder.sortedKeys.encode(header))
        out.append(0x0A)
        var tokInRequest = 0
        for t in 0 ..< tokenCount {
            if t > 0 && requests[t] != requests[t - 1] { tokInRequest = 0 }
            var line = "{\"req\":\(requests[t]),\"tok\":\(tokInRequest),\"experts\":["
            for l in 0 ..< header.layers {
                if l > 0 { line += "," }
                line += "[" + experts(token: t, layer: l).map(String.init).joined(separator: ",") + "]"
            }
            line += "]"
            if hasPredictions {
                line += ",\"predicted\":["
                for l in 0 ..< header.layers {
                    if l > 0 { line += "," }
                    if let p = predicted(token: t, layer: l) {
                        line += "[" + p.map(String.init).joined(separator: ",") + "]"
                    } else {
                        line += "null"
                    }
                }
                line += "]"
            }
            if hasScores {
                line += ",\"scores\":["
                for l in 0 ..< header.layers {
                    if l > 0 { line += "," }
                    if let (e, p) = scores(token: t, layer: l) {
                        line += "[" + zip(e, p).map { "[\($0),\($1)]" }.joined(separator: ",") + "]"
                    } else {
                        line += "null"
                    }
                }
                line += "]"
            }
            line += "}\n"
            out.append(contentsOf: line.utf8)
            tokInRequest += 1
        }
        return out
    }
}

extension JSONEncoder {
    static var sortedKeys: JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }
}

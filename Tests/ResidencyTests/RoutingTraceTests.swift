import Foundation
import Testing
import WStoreReplay

@testable import WeightStore

@Suite("Routing traces")
struct RoutingTraceTests {
    let header = #"{"kind":"wstore.routing-trace","version":1,"layers":2,"experts":4,"top_k":2}"#

    private func parse(_ lines: [String]) throws -> RoutingTrace {
        try RoutingTrace.parse(Data(lines.joined(separator: "\n").utf8))
    }

    private func lineOf(_ lines: [String]) -> Int? {
        do {
            _ = try parse(lines)
            return nil
        } catch let RoutingTraceError.malformed(line, _) { return line } catch { return -1 }
    }

    @Test func parsesTokensPredictionsAndIgnoresUnknownFields() throws {
        let t = try parse([
            header,
            #"{"req":0,"tok":0,"experts":[[0,1],[2,3]],"predicted":[null,[2,1]],"extra":"x"}"#,
            "",
            #"{"req":1,"tok":0,"experts":[[3,1],[0,2]]}"#,
        ])
        #expect(t.tokenCount == 2 && t.accessCount == 8)
        #expect(Array(t.experts(token: 1, layer: 0)) == [3, 1])
        #expect(t.predicted(token: 0, layer: 0) == nil)
        #expect(t.predicted(token: 0, layer: 1).map(Array.init) == [2, 1])
        #expect(t.predicted(token: 1, layer: 1) == nil)
        #expect(t.requests == [0, 1])
    }

    @Test func malformedLinesAreNamed() {
        let good = #"{"req":0,"tok":0,"experts":[[0,1],[2,3]]}"#
        #expect(lineOf([header, good, #"{"req":0,"experts":[[0,1]]}"#]) == 3)  // one layer short
        #expect(lineOf([header, good, good, #"{"req":0,"experts":[[0,9],[1,2]]}"#]) == 4)  // expert out of range
        #expect(lineOf([header, #"{"req":0,"experts":[[0,0],[1,2]]}"#]) == 2)  // repeated expert
        #expect(lineOf([header, "{not json"]) == 2)
        #expect(lineOf([header, #"{"req":0}"#]) == 2)  // no experts
        #expect(lineOf([header, #"{"experts":[[0,1],[2,3]],"predicted":[null]}"#]) == 2)  // predicted short
        #expect(lineOf([#"{"kind":"other","version":1,"layers":2,"experts":4,"top_k":2}"#]) == 1)
        #expect(lineOf([#"{"kind":"wstore.routing-trace","version":1,"layers":0,"experts":4,"top_k":2}"#]) == 1)
        #expect(lineOf(["[1,2]"]) == 1)
        #expect(throws: RoutingTraceError.newerVersion(2)) {
            try parse([#"{"kind":"wstore.routing-trace","version":2,"layers":2,"experts":4,"top_k":2}"#])
        }
        #expect(throws: RoutingTraceError.empty) { try parse(["", "  "]) }
    }

    @Test func absurdHeaderCountsAreRefusedNotTrapped() {
        let big = Int.max
        for (layers, experts) in [(big, 4), (2, big), (big, big), (1 << 32, 1 << 32)] {
            let h = #"{"kind":"wstore.routing-trace","version":1,"layers":\#(layers),"experts":\#(experts),"top_k":1}"#
            #expect(lineOf([h]) == 1, "layers \(layers), experts \(experts)")
        }
        #expect(
            lineOf([#"{"kind":"wstore.routing-trace","version":1,"layers":2,"experts":4,"top_k":2,"expert_bytes":-1}"#])
                == 1)
    }

    @Test func controlCharactersInATraceArePrintedEscaped() {
        // The newline inside the JSON string ends the line; an ESC inside a note is text, but a reason never carries it raw.
        let e = RoutingTraceError.malformed(line: 3, "names \u{1B}[2J\nexpert")
        #expect(!e.description.contains("\u{1B}") && !e.description.contains("\n"))
    }

    @Test func errorMessageNamesTheLine() {
        let e = RoutingTraceError.malformed(line: 7, "\"experts\"[1] names expert 9, outside 0..<4")
        #expect(e.description.hasPrefix("routing trace line 7: "))
    }

    @Test func synthRoundTripsAndSaysSynthetic() throws {
        var s = TraceSynth()
        s.layers = 4
        s.experts = 8
        s.requests = 2
        s.tokensPerRequest = 30
        s.expertBytes = 4096
        let t = try s.generate()
        let back = try RoutingTrace.parse(t.jsonLines())
        #expect(back.header == t.header)
        #expect(back.header.note?.hasPrefix("synthetic") == true)
        #expect(back.tokenCount == 60 && back.requests == t.requests)
        for tok in 0 ..< t.tokenCount {
            for l in 0 ..< 4 {
                #expect(Array(back.experts(token: tok, layer: l)) == Array(t.experts(token: tok, layer: l)))
                #expect(
                    back.predicted(token: tok, layer: l).map(Array.init)
                        == t.predicted(token: tok, layer: l).map(Array.init))
            }
        }
    }

    @Test func synthLooksLikeRealRouting() throws {
        var s = TraceSynth()
        s.layers = 8
        s.experts = 16
        s.requests = 8
        s.tokensPerRequest = 200
        let st = RoutingTraceStats(try s.generate())
        for l in 0 ..< 8 {
            #expect(st.topShare[l] > 0.10 && st.topShare[l] < 0.36, "layer \(l) top share \(st.topShare[l])")
            #expect(
                st.reuse[l] > st.chanceReuse[l] + 0.1, "layer \(l) reuse \(st.reuse[l]) vs chance \(st.chanceReuse[l])")
        }
        #expect(st.reuse[7] > st.reuse[0])
        #expect(st.accuracy[0] == nil)
        #expect(abs(st.accuracy[1]! - 0.75) < 0.05)
        #expect(abs(st.accuracy[7]! - 0.92) < 0.04)
    }
}

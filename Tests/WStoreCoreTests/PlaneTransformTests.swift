import Testing

@testable import WStoreCore

@Suite struct PlaneTransformTests {
    @Test(arguments: [PlaneTransform.none, .group2, .group4, .rotateGroup2, .rotateGroup4])
    func splitThenMergeIsIdentity(_ t: PlaneTransform) {
        var rng = SystemRandomNumberGenerator()
        let src = (0 ..< 4096).map { _ in UInt8.random(in: 0 ... 255, using: &rng) }
        var planes = [UInt8](repeating: 0, count: src.count)
        var back = [UInt8](repeating: 0xAA, count: src.count)
        src.withUnsafeBytes { s in planes.withUnsafeMutableBytes { t.split(s, into: $0) } }
        let n = src.count / t.width
        planes.withUnsafeBufferPointer { p in
            let ptrs = (0 ..< t.width).map { UnsafePointer(p.baseAddress! + $0 * n) }
            ptrs.withUnsafeBufferPointer { pp in
                back.withUnsafeMutableBytes { t.merge(planes: pp.baseAddress!, count: n, into: $0.baseAddress!) }
            }
        }
        #expect(back == src)
    }

    /// The vectorized 2-byte planes against the element-by-element definition (FORMAT.md §4.3),
    /// at lengths that leave a tail after any vector width.
    @Test(arguments: [PlaneTransform.group2, .rotateGroup2], [1, 15, 16, 33, 1031])
    func twoBytePlanesMatchTheirDefinition(_ t: PlaneTransform, _ n: Int) {
        var rng = SplitMix64(seed: UInt64(n))
        let src = (0 ..< 2 * n).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        var expected = [UInt8](repeating: 0, count: 2 * n)
        for i in 0 ..< n {
            var x = UInt16(src[2 * i]) | UInt16(src[2 * i + 1]) << 8
            if t == .rotateGroup2 { x = x << 1 | x >> 15 }
            expected[i] = UInt8(x >> 8)
            expected[n + i] = UInt8(x & 0xFF)
        }
        var planes = [UInt8](repeating: 0, count: 2 * n)
        src.withUnsafeBytes { s in planes.withUnsafeMutableBytes { t.split(s, into: $0) } }
        #expect(planes == expected)
        var back = [UInt8](repeating: 0xAA, count: 2 * n)
        planes.withUnsafeBufferPointer { p in
            [UnsafePointer(p.baseAddress!), UnsafePointer(p.baseAddress! + n)].withUnsafeBufferPointer { pp in
                back.withUnsafeMutableBytes { t.merge(planes: pp.baseAddress!, count: n, into: $0.baseAddress!) }
            }
        }
        #expect(back == src)
    }

    @Test func rotateGroup2PutsTheBF16ExponentInPlaneZero() {
        // bf16 1.0 = 0x3F80: sign 0, exponent 0x7F, mantissa 0.
        let src: [UInt16] = [0x3F80, 0xBF80]
        var planes = [UInt8](repeating: 0, count: 4)
        src.withUnsafeBytes { s in planes.withUnsafeMutableBytes { PlaneTransform.rotateGroup2.split(s, into: $0) } }
        #expect(planes[0] == 0x7F && planes[1] == 0x7F)  // exponents
        #expect(planes[2] == 0x00 && planes[3] == 0x01)  // mantissa, then the sign bit last
    }
}

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

    @Test func rotateGroup2PutsTheBF16ExponentInPlaneZero() {
        // bf16 1.0 = 0x3F80: sign 0, exponent 0x7F, mantissa 0.
        let src: [UInt16] = [0x3F80, 0xBF80]
        var planes = [UInt8](repeating: 0, count: 4)
        src.withUnsafeBytes { s in planes.withUnsafeMutableBytes { PlaneTransform.rotateGroup2.split(s, into: $0) } }
        #expect(planes[0] == 0x7F && planes[1] == 0x7F)  // exponents
        #expect(planes[2] == 0x00 && planes[3] == 0x01)  // mantissa, then the sign bit last
    }
}

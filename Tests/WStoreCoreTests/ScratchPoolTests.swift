import Testing

@testable import WStoreCore

/// The scratch pool's size classes: what keeps records of nearly one size on one buffer.
@Suite struct ScratchPoolTests {
    /// Every size gets a class that holds it, in whole pages, at most a quarter larger
    /// above 64 KiB; the classes never shrink as sizes grow.
    @Test func sizeClassesHoldTheirSizeWithinAQuarterMore() {
        var sizes = [1, 4095, 4096, 4097, 65535, 65536, 65537, 1 << 20, (1 << 20) + 1, 2_000_000, 64 << 20]
        var rng = SplitMix64(seed: 7)
        for _ in 0 ..< 2000 { sizes.append(Int(rng.next() % UInt64(64 << 20)) + 1) }
        var previous = (size: 0, cls: 0)
        for n in sizes.sorted() {
            let c = ScratchPool.sizeClass(n)
            #expect(c >= n && c % 4096 == 0, "size \(n) -> class \(c)")
            if n > 64 << 10 { #expect(c - n < (n + 3) / 4 + 1, "size \(n) -> class \(c)") }
            #expect(c >= previous.cls, "size \(n) -> class \(c), below \(previous.size) -> \(previous.cls)")
            previous = (n, c)
        }
        // An expert's compressed parts, a little apart, fall in one class.
        #expect(ScratchPool.sizeClass(1_900_000) == ScratchPool.sizeClass(2_050_000))
    }
}

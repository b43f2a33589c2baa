/// Redis Cluster key slots: CRC16 (XMODEM: polynomial 0x1021, initial value 0) of the key,
/// or of its hash tag, modulo 16384 (cluster-spec "Keys distribution model").
public enum HashSlot {
    /// Slots in a cluster.
    public static let count = 16384

    /// The slot of `key`. If the key holds `{...}` with at least one byte between the first `{`
    /// and the next `}`, only those bytes are hashed, so keys with the same tag share a slot.
    public static func of(_ key: some Collection<UInt8>) -> Int {
        let bytes = Array(key)
        if let open = bytes.firstIndex(of: UInt8(ascii: "{")),
            let close = bytes[(open + 1)...].firstIndex(of: UInt8(ascii: "}")), close > open + 1
        {
            return Int(crc16(bytes[(open + 1) ..< close]) & 0x3FFF)
        }
        return Int(crc16(bytes[...]) & 0x3FFF)
    }

    /// CRC16-CCITT (XMODEM), as Redis's crc16.c.
    public static func crc16(_ bytes: ArraySlice<UInt8>) -> UInt16 {
        var crc: UInt16 = 0
        for b in bytes {
            crc = (crc << 8) ^ table[Int(((crc >> 8) ^ UInt16(b)) & 0xFF)]
        }
        return crc
    }

    private static let table: [UInt16] = (0 ..< 256).map { i in
        var c = UInt16(i) << 8
        for _ in 0 ..< 8 { c = c & 0x8000 != 0 ? (c << 1) ^ 0x1021 : c << 1 }
        return c
    }
}

import CWStoreHeader
import Glibc
import Testing
import WeightStore

@testable import CWStoreABI

/// A failed system call reaches a C caller as WSTORE_E_IO, its message one line.
@Suite struct IOStatusTests {
    @Test func ioErrorIsWSTORE_E_IO() {
        let rc = guarded { throw WStoreError.io(call: "fsync", path: "/x/data.mdb", errno: EIO) }
        #expect(rc == WSTORE_E_IO.rawValue)
        #expect(String(cString: CWStoreABI.wstore_last_error()!) == "fsync /x/data.mdb: Input/output error")
    }
}

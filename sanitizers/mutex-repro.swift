// The ThreadSanitizer false positive behind sanitizers/tsan.supp, reduced to Synchronization.Mutex
// alone. Build and run (from the repository root):
//
//     swiftc -Onone -sanitize=thread -parse-as-library sanitizers/mutex-repro.swift -o /tmp/mutex-repro
//     /tmp/mutex-repro
//
// Four threads add to two values that are touched only inside Mutex.withLock. The totals are
// always exact (the lock works), yet TSan reports "Swift access race" / "data race" on them
// whenever a thread had to wait: Mutex's fast path (a compare-exchange inlined into this
// module) is instrumented, but its contended path, `_MutexHandle._lockSlow` and `_unlockSlow`
// in libswiftSynchronization.so (a futex wait and wake), is not, so TSan never sees the
// release and acquire that order the two critical sections. The same happens with -O, less often.
import Dispatch
import Synchronization

final class Counter: Sendable {
    let count = Mutex(0)
    let list = Mutex([Int]())
}

@main struct MutexRepro {
    static func main() {
        let c = Counter()
        DispatchQueue.concurrentPerform(iterations: 4) { _ in
            for i in 0 ..< 10_000 {
                c.count.withLock { $0 += 1 }
                c.list.withLock { $0.append(i) }
            }
        }
        let (n, m) = (c.count.withLock { $0 }, c.list.withLock { $0.count })
        print("count \(n), list \(m) (expected 40000 each)")
        if n != 40_000 || m != 40_000 { fatalError("the lock failed") }
    }
}

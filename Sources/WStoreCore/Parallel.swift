import Dispatch
import Glibc
import Synchronization

/// Runs `body(i)` for every `i` in `0..<count` on up to `threads` threads.
/// Items are handed out in order, one at a time, to whichever worker is free (so a
/// worker slowed by other work takes fewer); `body` may keep per-worker scratch space
/// keyed by the worker index.
package func parallelFor(_ count: Int, threads: Int, _ body: (_ item: Int, _ worker: Int) throws -> Void) throws {
    let workers = max(1, min(threads, count))
    if workers == 1 {
        for i in 0 ..< count { try body(i, 0) }
        return
    }
    let firstError = FirstError()
    let nextItem = ItemCounter()
    withoutActuallyEscaping(body) { body in
        // concurrentPerform returns only after every iteration has finished, so `body`
        // does not outlive this call; the caller makes what `body` touches per-item.
        let shared = UncheckedSendable(body)
        DispatchQueue.concurrentPerform(iterations: workers) { w in
            while !firstError.isSet {
                let i = nextItem.take()
                guard i < count else { break }
                do { try shared.value(i, w) } catch { firstError.set(error) }
            }
        }
    }
    if let e = firstError.value { throw e }
}

private final class ItemCounter: Sendable {
    private let next = Atomic<Int>(0)
    /// The next item index, each handed out once.
    func take() -> Int { next.add(1, ordering: .relaxed).oldValue }
}

private final class FirstError: Sendable {
    private let slot = Mutex<(any Error)?>(nil)
    var isSet: Bool { slot.withLock { $0 != nil } }
    var value: (any Error)? { slot.withLock { $0 } }
    func set(_ e: any Error) { slot.withLock { if $0 == nil { $0 = e } } }
}

/// A value computed on a thread of its own from the moment it is made; ``value()``
/// waits for it. For overlapping one stage of a pipeline with the next.
///
/// The thread is a thread of its own (pthread_create(3)), not one of Dispatch's pool:
/// the pool holds about as many threads as there are cores, so a ``parallelFor`` run
/// from a pool thread finds no free thread for its other workers while the pool is
/// busy, and its items run on the calling thread alone.
package final class Background<T>: @unchecked Sendable {
    // `result` is written once, on the worker, before `done` is signalled, and read only
    // after waiting for `done`.
    private var result: Result<T, any Error>?
    private let done = DispatchSemaphore(value: 0)

    /// Starts `body` on a new thread (on a global queue if no thread can be made).
    package init(_ body: @escaping @Sendable () throws -> T) {
        let start = ThreadStart { [self] in
            self.result = Result { try body() }
            self.done.signal()
        }
        let context = Unmanaged.passRetained(start).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(
            &thread, nil,
            { context in
                Unmanaged<ThreadStart>.fromOpaque(context!).takeRetainedValue().run()
                return nil
            }, context)
        if rc == 0 {
            pthread_detach(thread)
        } else {
            Unmanaged<ThreadStart>.fromOpaque(context).release()
            DispatchQueue.global().async { start.run() }
        }
    }

    /// Computes `body` now, on the calling thread: a value too small to be worth a thread,
    /// given where a ``Background`` is expected.
    package init(now body: () throws -> T) {
        result = Result { try body() }
        done.signal()
    }

    /// Waits for the value; each call after the first returns (or throws) the same at once.
    package func value() throws -> T {
        done.wait()
        done.signal()
        return try result!.get()
    }
}

/// What a new thread runs, carried through pthread_create's context pointer.
private final class ThreadStart: @unchecked Sendable {
    let run: () -> Void
    init(_ run: @escaping () -> Void) { self.run = run }
}

package enum System {
    package static var activeProcessorCount: Int {
        Posix.processorCount
    }
}

/// Carries a value into a `@Sendable` closure whose callers guarantee the access is safe.
package struct UncheckedSendable<T>: @unchecked Sendable {
    package let value: T
    package init(_ value: T) { self.value = value }
}

import Dispatch
import Synchronization

/// The completion of one in-flight expert load, which any number of sync and async
/// acquirers wait on: this is how concurrent loads of one expert are coalesced.
final class LoadFuture: Sendable {
    private struct State {
        var done = false
        var error: (any Error)?
        var sleepers: [DispatchSemaphore] = []
        var continuations: [CheckedContinuation<Void, Never>] = []
    }
    private let state = Mutex(State())

    /// Marks the load finished (with `error` when it failed) and wakes every waiter.
    func complete(_ error: (any Error)?) {
        let (sleepers, continuations) = state.withLock { s in
            s.done = true
            s.error = error
            defer {
                s.sleepers = []
                s.continuations = []
            }
            return (s.sleepers, s.continuations)
        }
        for s in sleepers { s.signal() }
        for c in continuations { c.resume() }
    }

    /// Blocks the calling thread until the load finishes; rethrows its error.
    func wait() throws {
        let sleeper: DispatchSemaphore? = state.withLock { s in
            if s.done { return nil }
            let sem = DispatchSemaphore(value: 0)
            s.sleepers.append(sem)
            return sem
        }
        sleeper?.wait()
        if let e = state.withLock({ $0.error }) { throw e }
    }

    /// Suspends until the load finishes; rethrows its error.
    func value() async throws {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let resumeNow = state.withLock { s -> Bool in
                if s.done { return true }
                s.continuations.append(c)
                return false
            }
            if resumeNow { c.resume() }
        }
        if let e = state.withLock({ $0.error }) { throw e }
    }
}

import WStoreCore

extension WeightStore {
    /// Drops the pages of tensor `name` from this process's mappings and from the page
    /// cache, so that its next read comes from disk (for cold-read benchmarks). Only the
    /// record's own pages go: the tree pages that find it stay, as they would in a
    /// process that reads its store all day.
    package func evictFromMemory(_ name: String, model: String = WeightStore.defaultModel) throws {
        let dropped = try withSnapshot { s -> Bool in
            guard let bytes = try s.txn.get(tensorsDB, tensorKey(model: model, name: name)) else { return true }
            let offset = env.fileOffset(of: bytes)
            PageCache.unmapPages(bytes)
            guard let offset else { return false }
            env.dropRecordPages(offset: offset, length: bytes.count)
            return true
        }
        if !dropped { PageCache.drop(path: env.dataFilePath) }
    }
}

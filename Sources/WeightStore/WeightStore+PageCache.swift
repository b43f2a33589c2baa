import WStoreCore

extension WeightStore {
    /// Drops the pages of tensor `name` from this process's mappings and from the page
    /// cache, so that its next read comes from disk (for cold-read benchmarks).
    package func evictFromMemory(_ name: String, model: String = WeightStore.defaultModel) throws {
        try withSnapshot { s in
            if let bytes = try s.txn.get(tensorsDB, tensorKey(model: model, name: name)) {
                PageCache.unmapPages(bytes)
            }
        }
        PageCache.drop(path: env.dataFilePath)
    }
}

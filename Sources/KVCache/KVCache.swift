import WStoreCore

// The KV cache: prefix-keyed, compressed KV tensors, SnapKV selection and KIVI-style
// quantization. format-spec/KV.md describes the store on disk.
@_exported import enum WStoreCore.DType
@_exported import struct WStoreCore.LMDBError
@_exported import enum WStoreCore.WStoreError

@_exported import enum WStoreCore.CodecChoice
@_exported import enum WStoreCore.DType
@_exported import struct WStoreCore.ExpertKey
@_exported import enum WStoreCore.ExpertPrecision
// Types users of the weight store need (DType, CodecChoice, the errors) live in
// the storage core; re-export them so `import WeightStore` is enough.
@_exported import struct WStoreCore.LMDBError
@_exported import struct WStoreCore.ModelInfo
@_exported import enum WStoreCore.WStoreError

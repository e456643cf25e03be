export {
  add,
  type Dtype,
  keep,
  matmul,
  matmulAsync,
  randn,
  type RandnOptions,
  scope,
  scopeAsync,
  sum,
  Tensor,
  type TensorData,
  tensor,
  to,
  zeros,
} from './tensor.js';
export {
  emptyCpuCache,
  type MemoryStats,
  memoryStats,
  nativeLocation,
  type RuntimeInfo,
  runtimeInfo,
  setCpuCacheLimit,
  setNumThreads,
} from './runtime.js';
export {
  Index,
  type IndexKind,
  type IndexMetric,
  type IndexOptions,
  kmeans,
  kmeansAsync,
  type KMeansOptions,
  type KMeansResult,
  type SearchResult,
} from './faiss.js';
export { NativeLoadError } from './native.js';

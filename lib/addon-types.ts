// The addon's exports, typed by hand: every function, class, option object and result the native
// layer (native/binding) registers. test/22 reads these declarations with the TypeScript compiler
// and checks them against what the loaded addon registers. lib/native.ts loads the addon and
// re-exports these types; the rest of lib/ reaches the addon through it.

/** A tensor's element type, named as in torch. */
export type Dtype = 'float32' | 'float64' | 'bfloat16' | 'float16' | 'int32' | 'int64' | 'uint8' | 'bool';
/** Which KL divergence {@link flashbackDivergence} takes: symmetric, KL(ref||cur) or KL(cur||ref). */
export type KlKind = 'symmetric' | 'forward' | 'reverse';
/** How a loss over tokens is reduced: the mean over counted tokens, or their sum. */
export type Reduction = 'mean' | 'sum';
/** The typed arrays a tensor is made from and read into. */
export type TensorData = Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array;

/**
 * The addon's handle of one libtorch tensor: a number, the tensor's id in the addon's table (what a
 * `Tensor` owns). Ops take and return ids; `dispose(id)` frees one. An id is never reused for
 * another tensor, so a disposed tensor's id is refused by every op ("a is a disposed tensor").
 * An id that no Tensor owns is not freed by the GC: code calling the addon directly disposes it.
 */
export type NativeTensor = number & {
  /** Type-level only (no such property exists): keeps plain numbers from passing for ids. */
  readonly __nativeTensor: never;
};

/** What {@link runtimeInfo} reports. */
export interface RuntimeInfo {
  /** The libtorch version the addon was compiled against. */
  torchVersion: string;
  /** The FAISS version linked into the addon. */
  faissVersion: string;
  /** Whether libtorch was built with CUDA. */
  cuda: boolean;
  /** CUDA devices visible (0 without CUDA). */
  cudaDevices: number;
  /** The CUDA runtime the addon was compiled with ("13.0"), "" for a CPU build. */
  cudaVersion: string;
  /** Whether the addon was compiled against a CUDA libtorch, with the kernels of native/core/cuda. */
  cudaKernels: boolean;
  /** Whether libtorch uses MKL. */
  mkl: boolean;
  /**
   * What float32 linear layers that record no gradient run on, on the CPU: 'onednn' (libtorch's
   * oneDNN, the default on AMD processors with AVX-512, where MKL takes AVX2) or 'mkl' (at::linear).
   * `JFA_CPU_GEMM=onednn|mkl` in the environment chooses; docs/benchmarks.md has the measurements.
   */
  cpuGemm: 'onednn' | 'mkl';
  /** Whether libtorch uses OpenMP. */
  openmp: boolean;
  /** libtorch's intra-op threads (see {@link setNumThreads}). */
  numThreads: number;
}

/** What {@link memoryStats} reports. */
export interface MemoryStats {
  /** Tensor handles not yet disposed or collected. */
  liveTensors: number;
  /** Bytes the live tensor handles own. */
  liveBytes: number;
  /** The caching CPU allocator: bytes in live tensors. */
  cpuAllocatedBytes: number;
  /** Bytes freed by tensors and kept for reuse. */
  cpuCachedBytes: number;
  /** The cap on the bytes kept for reuse (see {@link setCpuCacheLimit}). */
  cpuCacheLimitBytes: number;
  /** Allocations served from the kept memory. */
  cpuCacheHits: number;
  /** Allocations that went to the system. */
  cpuCacheMisses: number;
  /** The visible GPUs and their CUDA caching allocator's bytes; empty on a CPU-only build or machine. */
  gpus: GpuStats[];
}

/** One GPU in {@link MemoryStats}. Allocator bytes stay 0 until a CUDA device is first used. */
export interface GpuStats {
  /** the CUDA device index (device 'cuda:index') */
  index: number;
  /** e.g. "NVIDIA H100 80GB HBM3" */
  name: string;
  /** bytes of device memory */
  totalMemory: number;
  /** compute capability, e.g. "9.0" */
  capability: string;
  /** bytes held by live tensors */
  allocatedBytes: number;
  /** bytes the caching allocator holds (live + cached) */
  reservedBytes: number;
  /** the most bytes live tensors held since the start or resetPeakMemory() */
  peakAllocatedBytes: number;
}

/** An {@link Index}'s kind: exact inner-product or L2 search, or an approximate HNSW graph. */
export type IndexKind = 'flat-ip' | 'flat-l2' | 'hnsw';
/** Inner product (larger is nearer) or squared L2 distance (smaller is nearer). */
export type IndexMetric = 'ip' | 'l2';

export interface NativeIndexOptions {
  kind: IndexKind;
  dim: number;
  metric?: IndexMetric;
  hnswM?: number;
  efSearch?: number;
}

/** What {@link Index.search} returns: k entries per query, best first. */
export interface SearchResult {
  /** n*k distances, row-major: squared L2 or inner products. */
  distances: Float32Array;
  /** n*k vector ids (insertion order), -1 where fewer than k vectors exist. */
  labels: BigInt64Array;
}

/** A FAISS index. Vectors are read from the Float32Array in place, never copied. */
export interface NativeIndex {
  readonly kind: IndexKind;
  readonly metric: IndexMetric;
  readonly dim: number;
  readonly ntotal: number;
  readonly disposed: boolean;
  /** hnsw only (undefined for flat kinds). */
  efSearch: number | undefined;
  add(vectors: Float32Array): void;
  addAsync(vectors: Float32Array): Promise<void>;
  search(queries: Float32Array, k: number): SearchResult;
  searchAsync(queries: Float32Array, k: number): Promise<SearchResult>;
  reset(): void;
  save(path: string): void;
  dispose(): void;
}

export interface NativeIndexClass {
  new (options: NativeIndexOptions): NativeIndex;
  load(path: string): NativeIndex;
}

export interface NativeKMeansOptions {
  dim: number;
  k: number;
  iterations?: number;
  seed?: number;
  spherical?: boolean;
}

/** What {@link kmeans} returns. */
export interface KMeansResult {
  /** k*dim, row-major. */
  centroids: Float32Array;
  /** The cluster of each point. */
  assignments: Int32Array;
  /** Sum of squared distances to the assigned centroids (spherical: sum of inner products). */
  objective: number;
}

/** The addon's exports, typed. Arguments are checked natively; bad ones throw TypeError/RangeError. */
export interface NativeAddon {
  /** The size of each dimension. */
  shape(t: NativeTensor): number[];
  /** The element type. */
  dtype(t: NativeTensor): Dtype;
  /** "cpu", "cuda:0", ... */
  device(t: NativeTensor): string;
  /** Bytes of native memory the elements occupy. */
  nbytes(t: NativeTensor): number;
  /** Whether the id was disposed (a TypeError for a value that was never an id). */
  isDisposed(t: NativeTensor): boolean;
  /** A copy of the elements in row-major order, as a typed array matching the dtype. */
  toTypedArray(t: NativeTensor): TensorData;
  /** Frees the tensor now; disposing a disposed id does nothing. */
  dispose(t: NativeTensor): void;
  fromTypedArray(data: TensorData, shape: readonly number[], device?: string): NativeTensor;
  zeros(shape: readonly number[], dtype?: Dtype, device?: string): NativeTensor;
  randn(shape: readonly number[], dtype?: Dtype, seed?: number | bigint, device?: string): NativeTensor;
  /** a copy on `device` (the same tensor when it is there already) */
  toDevice(a: NativeTensor, device: string): NativeTensor;
  matmul(a: NativeTensor, b: NativeTensor): NativeTensor;
  matmulAsync(a: NativeTensor, b: NativeTensor): Promise<NativeTensor>;
  add(a: NativeTensor, b: NativeTensor, alpha?: number): NativeTensor;
  sum(a: NativeTensor, dims?: number | readonly number[], keepdim?: boolean): NativeTensor;
  to(a: NativeTensor, dtype: Dtype): NativeTensor;
  setRequiresGrad(a: NativeTensor, flag?: boolean): void;
  requiresGrad(a: NativeTensor): boolean;
  grad(a: NativeTensor): NativeTensor | null;
  zeroGrad(a: NativeTensor): void;
  backward(a: NativeTensor, gradient?: NativeTensor): void;
  detach(a: NativeTensor): NativeTensor;

  loraLinear(
    x: NativeTensor,
    W: NativeTensor,
    A: NativeTensor,
    B: NativeTensor,
    options?: { bias?: NativeTensor; scale?: number; dropout?: number; seed?: number | bigint },
  ): NativeTensor;
  loraScale(loraAlpha: number, r: number, rslora?: boolean): number;
  loraInit(A: NativeTensor, B: NativeTensor, options?: { init?: 'kaiming' | 'gaussian'; seed?: number | bigint }): void;
  loraMerge(W: NativeTensor, A: NativeTensor, B: NativeTensor, options?: { scale?: number; unmerge?: boolean }): void;
  flashbackDivergence(
    cur: NativeTensor,
    ref: NativeTensor,
    mask: NativeTensor,
    options?: { kind?: KlKind; reduction?: Reduction; temperature?: number },
  ): NativeTensor;
  tokenCrossEntropy(
    logits: NativeTensor,
    targets: NativeTensor,
    options?: { mask?: NativeTensor; ignoreIndex?: number; reduction?: Reduction },
  ): NativeTensor;
  pcgrad(
    grads: NativeTensor[][],
    options?: { orders?: number[][]; seed?: number | bigint },
  ): { grads: NativeTensor[]; conflicts: number; gram: Float64Array };
  pcgradOrders(n: number, seed?: number | bigint): number[][];
  gpmBasis(activations: NativeTensor, threshold: number, basis?: NativeTensor): NativeTensor;
  gpmProject(grad: NativeTensor, basis: NativeTensor): NativeTensor;
  latentMixture(x: NativeTensor, A: NativeTensor, B: NativeTensor, indices: NativeTensor, weights: NativeTensor): NativeTensor;

  loadSafetensors(path: string): { names: string[]; tensors: Record<string, NativeTensor>; metadata: Record<string, string> };
  saveSafetensors(path: string, tensors: Record<string, NativeTensor>, metadata?: Record<string, string>): void;

  Model: {
    load(dir: string, dtype?: Dtype): NativeModel;
    loadAsync(dir: string, dtype?: Dtype): Promise<NativeModel>;
    random(configJson: string, seed?: number | bigint, initStd?: number): NativeModel;
  };
  /** made by Model#decoderAsync only */
  Decoder: { readonly prototype: NativeDecoder };
  /** made by Model#continuousDecoderAsync only */
  ContinuousDecoder: { readonly prototype: NativeContinuousDecoder };
  Optimizer: new (params: NativeTensor[], options?: NativeAdamWOptions) => NativeOptimizer;
  ProcessGroup: new (options: NativeGroupOptions) => NativeProcessGroup;
  /** this build can make NCCL process groups (a CUDA libtorch with c10d's NCCL) */
  ncclBuilt: boolean;
  copyInto(dst: NativeTensor, src: NativeTensor): void;
  setGrad(a: NativeTensor, grad: NativeTensor | undefined): void;

  clipGradNorm(params: NativeTensor[], maxNorm: number): number;

  info(): RuntimeInfo;
  setNumThreads(n: number): void;
  stats(): MemoryStats;
  setCpuCacheLimit(bytes: number): void;
  emptyCpuCache(): void;
  /** null when a tiny FAISS search works, else what went wrong. */
  faissSelfCheck(): string | null;
  /** clears every GPU's peak allocator counter (no-op without CUDA) */
  resetPeakMemory(): void;
  /** returns the CUDA caching allocator's free blocks to the driver (no-op without CUDA) */
  emptyCudaCache(): void;
  /** waits for this thread's CUDA stream on every GPU used (no-op without CUDA) */
  synchronize(): void;
  Index: NativeIndexClass;
  kmeans(data: Float32Array, options: NativeKMeansOptions): KMeansResult;
  kmeansAsync(data: Float32Array, options: NativeKMeansOptions): Promise<KMeansResult>;
  /**
   * The most arguments each export takes (the addon refuses more): "fn" for functions,
   * "Class.fn" for static methods, "Class#fn" for methods. A test checks this type against it.
   */
  signatures: Record<string, number>;
}

/** A loaded model's shape, from its config.json (LlamaConfig fields, camel-cased). */
export interface ModelConfig {
  /** Tokens in the vocabulary. */
  vocabSize: number;
  /** Width of the residual stream. */
  hiddenSize: number;
  /** Width of the MLP's inner layer. */
  intermediateSize: number;
  /** Decoder layers. */
  numLayers: number;
  /** Attention (query) heads. */
  numHeads: number;
  /** Key/value heads (fewer than numHeads with grouped-query attention). */
  numKeyValueHeads: number;
  /** Width of one head. */
  headDim: number;
  /** Whether the output head shares the embedding matrix. */
  tieWordEmbeddings: boolean;
  /** Whether RoPE uses Llama 3's frequency scaling. */
  llama3RopeScaling: boolean;
  /** config.json's model_type: llama, qwen2, qwen3, mistral, phi3, gemma2 or gemma3_text. */
  modelType: string;
  /** The attention window of windowed layers (Mistral, Phi-3, Qwen with use_sliding_window, Gemma's local layers), or null. */
  slidingWindow: number | null;
  /** The module names of the linear layers LoRA can adapt (Phi-3's are fused: qkv_proj, gate_up_proj). */
  linearModules: string[];
}

export interface NativeLatent {
  indices: NativeTensor;
  weights: NativeTensor;
}

export interface NativeForwardOptions {
  attentionMask?: NativeTensor;
  /** run the LoRA adapters (default true); false is the frozen base, the JFA reference */
  adapters?: boolean;
  latent?: NativeLatent;
}

export interface NativeGenerateOptions extends NativeForwardOptions {
  maxNewTokens?: number;
  temperature?: number;
  topP?: number;
  /** 0: off */
  topK?: number;
  /** 1: off */
  repetitionPenalty?: number;
  seed?: number | bigint;
  eosTokenIds?: number[];
  padTokenId?: number;
}

/** A continuous decoder's options: a Decoder's (greedy only), latent rows one per prompt, and the slots. */
export interface NativeContinuousOptions extends NativeGenerateOptions {
  /** prompts decoded at once */
  slots: number;
}

export interface NativeModel {
  readonly config: ModelConfig;
  readonly dtype: Dtype;
  /** "cpu", "cuda:0", ... */
  readonly device: string;
  /** moves every weight, adapter and latent pool to `device`, in place */
  toDevice(device: string): void;
  readonly parameterCount: number;
  logits(ids: NativeTensor, options?: NativeForwardOptions): NativeTensor;
  /** logits on the libuv pool, without gradients */
  logitsAsync(ids: NativeTensor, options?: NativeForwardOptions): Promise<NativeTensor>;
  hiddenStates(ids: NativeTensor, options?: NativeForwardOptions): NativeTensor;
  head(hidden: NativeTensor, rows?: NativeTensor): NativeTensor;
  setLatentPool(layer: number, A: NativeTensor, B: NativeTensor): void;
  meanPooled(ids: NativeTensor, options?: Omit<NativeForwardOptions, 'latent'>): NativeTensor;
  generateAsync(ids: NativeTensor, options?: NativeGenerateOptions): Promise<NativeTensor>;
  /** a generation in progress, after the prompt's prefill on the libuv pool; holds the model unchanged until done or disposed */
  decoderAsync(ids: NativeTensor, options?: NativeGenerateOptions): Promise<NativeDecoder>;
  /** continuous batching of greedy generation: prompts `ids` (1-D int64, one after another) of `lengths`; nothing runs until the first step */
  continuousDecoderAsync(ids: NativeTensor, lengths: number[], options: NativeContinuousOptions): Promise<NativeContinuousDecoder>;
  mergeLora(): void;
  /** freezes the adapters beneath the base; returns the stacked count per adapted layer */
  stackLora(): number;
  /** drops the trainable adapters unfolded; how many layers had one */
  removeLora(): number;
  readonly stackedAdapters: number;
  weights(): Record<string, NativeTensor>;
  setBaseTrainable(trainable: boolean): void;
  /** whether training forward passes keep only each layer's input and recompute the layer in the backward */
  activationCheckpointing: boolean;
  addLora(targets: string[], options?: { r?: number; loraAlpha?: number; rslora?: boolean; seed?: number | bigint }): void;
  loraParameters(): Record<string, NativeTensor>;
  /** EWC's diagonal Fisher of the adapted layers' base weights (adapters off), one float32 tensor per adapted layer in loraParameters' order */
  fisherDiagonalAsync(ids: NativeTensor, options: { attentionMask?: NativeTensor; targets: NativeTensor }): Promise<NativeTensor[]>;
  dispose(): void;
}

/** A generation in progress: its KV cache and sampler state, stepped from JS. */
export interface NativeDecoder {
  /** every row stopped, maxNewTokens were made, or it was disposed */
  readonly done: boolean;
  readonly batchSize: number;
  /** tokens made per row so far */
  readonly produced: number;
  /** up to n (default 1) more tokens per row on the libuv pool: one array per row, padTokenId where a row stopped; empty once done */
  stepAsync(n?: number): Promise<number[][]>;
  /** rows (batch indices) that stop now; not while a step runs */
  stop(rows: number[]): void;
  /** frees the cache and the model's lease (a running step ends after its current token) */
  dispose(): void;
}

/** Continuous batching in progress: slots refilled from the queue of prompts, stepped from JS. */
export interface NativeContinuousDecoder {
  /** every prompt ended, or it was disposed */
  readonly done: boolean;
  /** prompts not yet ended */
  readonly remaining: number;
  /** up to n (default 1) decode steps on the libuv pool: the prompts that ended in them, with their tokens (the end-of-sequence token last when one ended it) */
  stepAsync(n?: number): Promise<Array<{ prompt: number; tokens: number[] }>>;
  /** frees the cache and the model's lease (a running step ends after its current token) */
  dispose(): void;
}

/** Every field is required: the defaults are lib/optim.ts's. */
export interface NativeAdamWOptions {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

/** One micro-batch of a training step, as the native step reads it. */
export interface NativeStepBatch {
  kind: 'new' | 'flashback';
  ids: NativeTensor;
  attentionMask?: NativeTensor;
  targets?: NativeTensor;
  referenceLogits?: NativeTensor;
  referenceHidden?: NativeTensor;
  latent?: NativeLatent;
  /** data-parallel: this rank's share of the micro-batch's loss (1 in one process) */
  weight: number;
}

/**
 * Everything one training step needs, read once natively. Every setting is required: the addon
 * invents no defaults (they are lib/jfa/plan.ts's TRAIN_DEFAULTS, filled in by lib/jfa/step.ts).
 */
export interface NativeStep {
  /** flashback batches add the divergence (else they are skipped) */
  divergence: boolean;
  /** batches' latent tasks apply (else they are ignored) */
  latent: boolean;
  alpha: number;
  kl: KlKind;
  reduction: Reduction;
  pcgrad: boolean;
  maxGradNorm: number;
  seed: number | bigint;
  plainSftWeight: number;
  /** EWC's weight (0: off) and Fisher, one tensor per adapted layer (empty when off) */
  ewcLambda: number;
  ewcFisher: NativeTensor[];
  /** O-LoRA's weight (0: off) and the earlier rounds' A stacked by rows, one tensor per adapted layer (empty when off) */
  oloraLambda: number;
  oloraPrevious: NativeTensor[];
  /** PACE: the noise's standard deviation (0: off) and the consistency's weight */
  paceSigma: number;
  paceLambda: number;
  lr: number;
  timings: boolean;
  /** data-parallel: sum each micro-batch's gradients over this group before combining them */
  group?: NativeProcessGroup;
  /** with group: one flat buffer per micro-batch or one all-reduce per tensor */
  bucket?: 'flat' | 'tensor';
  batches: NativeStepBatch[];
}

/** How a process joins a data-parallel group (torchrun's conventions). */
export interface NativeGroupOptions {
  rank: number;
  worldSize: number;
  masterAddr?: string;
  masterPort?: number;
  timeoutMs?: number;
  heartbeatMs?: number;
  backend?: 'auto' | 'gloo' | 'nccl';
  /** where this rank's tensors live ('cpu' default, 'cuda', 'cuda:N'): a GPU makes 'auto' NCCL where built */
  device?: string;
}

/** A c10d process group (TCPStore + Gloo, or NCCL); collectives run on the libuv pool. */
export interface NativeProcessGroup {
  readonly rank: number;
  readonly worldSize: number;
  /** 'gloo' or 'nccl' once connected, else null */
  readonly backend: string | null;
  readonly connected: boolean;
  connectAsync(): Promise<void>;
  allReduceAsync(tensors: NativeTensor[], options?: { bucket?: 'flat' | 'tensor'; scale?: number }): Promise<void>;
  broadcastAsync(tensors: NativeTensor[], root?: number): Promise<void>;
  barrierAsync(): Promise<void>;
  exchangeAsync(key: string, value: string): Promise<string[]>;
  dispose(): void;
}

/** Milliseconds per phase of a training step; `total` is the whole step. */
export interface NativeStepTimings {
  /** the trained model's forward passes */
  forward: number;
  /** the reference forward passes (flashbacks) */
  refForward: number;
  /** the fused loss kernels (value and gradient of the logits) and reading the loss back */
  loss: number;
  /** back-propagation through the model */
  backward: number;
  /** taking each micro-batch's gradients apart from the parameters */
  gradCollect: number;
  /** data-parallel: starting the gradients' all-reduce and waiting for what the backward did not hide, and the losses' */
  allreduce: number;
  /** PCGrad (or the mean) and setting the combined gradients */
  projection: number;
  /** gradient-norm clipping */
  clip: number;
  /** the AdamW update */
  optimizer: number;
  /** the whole step */
  total: number;
}

/** A training step's losses and gradient statistics, as the native step reports them. */
export interface NativeStepMetrics {
  /** mean new-task cross-entropy over the step's micro-batches */
  sft: number;
  /** mean of the plain (latent off) SFT loss where plainSftWeight added it, else 0 */
  plainSft: number;
  /** mean flashback divergence (0 without flashbacks) */
  divergence: number;
  /** the weighted penalties added to the loss: EWC's and O-LoRA's, plus PACE's consistency (mean over new-task micro-batches); 0 without */
  penalty: number;
  /** the gradients' total L2 norm before clipping */
  gradNorm: number;
  /** PCGrad projections applied (conflicting micro-batch gradient pairs) */
  conflicts: number;
  /** when the step asked for timings */
  timings?: NativeStepTimings;
}

/** Trainable parameters with their AdamW state, owned natively; runs whole training steps. */
export interface NativeOptimizer {
  readonly expAvg: NativeTensor[];
  readonly expAvgSq: NativeTensor[];
  readonly steps: NativeTensor;
  /** a training step is running */
  readonly busy: boolean;
  /** AdamW on the parameters' current gradients */
  step(lr: number): void;
  /** a whole step (forward, backward, divergence, PCGrad, clipping, AdamW) on the libuv pool */
  trainStepAsync(model: NativeModel, step: NativeStep): Promise<NativeStepMetrics>;
  dispose(): void;
}

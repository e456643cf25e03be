// Loads the native addon and is the only module that talks to it. Order of work:
// 1. find the binary as node-gyp-build resolves it (build/Release, else the prebuild under
//    prebuilds/<platform>-<arch>/ whose tags fit this Node) and its build record;
// 2. find libtorch (lib/locate.ts) and refuse one whose version differs from the build's;
// 3. open libtorch through jfa_preload, so the addon's libtorch dependencies resolve to it;
// 4. load the addon. Anything missing gives one NativeLoadError listing what was looked for and the fix.
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, dirname, join, relative } from 'node:path';
import { performance } from 'node:perf_hooks';

import { baseVersion, type LibtorchLocation, locateLibtorch, packageRoot } from './locate.js';

export type Dtype = 'float32' | 'float64' | 'bfloat16' | 'float16' | 'int32' | 'int64' | 'uint8' | 'bool';
export type KlKind = 'symmetric' | 'forward' | 'reverse';
export type Reduction = 'mean' | 'sum';
export type TensorData = Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array;

/** A handle owning one libtorch tensor. */
export interface NativeTensor {
  readonly shape: number[];
  readonly dtype: Dtype;
  readonly device: string;
  readonly nbytes: number;
  readonly disposed: boolean;
  toTypedArray(): TensorData;
  dispose(): void;
}

export interface RuntimeInfo {
  /** The libtorch version the addon was compiled against. */
  torchVersion: string;
  faissVersion: string;
  cuda: boolean;
  cudaDevices: number;
  mkl: boolean;
  openmp: boolean;
  numThreads: number;
}

export interface MemoryStats {
  /** Tensor handles not yet disposed or collected, and the bytes they own. */
  liveTensors: number;
  liveBytes: number;
  /** The caching CPU allocator: bytes in live tensors, bytes kept for reuse, the cap on those. */
  cpuAllocatedBytes: number;
  cpuCachedBytes: number;
  cpuCacheLimitBytes: number;
  cpuCacheHits: number;
  cpuCacheMisses: number;
}

export type IndexKind = 'flat-ip' | 'flat-l2' | 'hnsw';
export type IndexMetric = 'ip' | 'l2';

export interface NativeIndexOptions {
  kind: IndexKind;
  dim: number;
  metric?: IndexMetric;
  hnswM?: number;
  efSearch?: number;
}

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
  Tensor: abstract new (...args: never[]) => NativeTensor;
  fromTypedArray(data: TensorData, shape: readonly number[]): NativeTensor;
  zeros(shape: readonly number[], dtype?: Dtype): NativeTensor;
  randn(shape: readonly number[], dtype?: Dtype, seed?: number | bigint): NativeTensor;
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
  Optimizer: new (params: NativeTensor[], options?: NativeAdamWOptions) => NativeOptimizer;
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
  Index: NativeIndexClass;
  kmeans(data: Float32Array, options: NativeKMeansOptions): KMeansResult;
  kmeansAsync(data: Float32Array, options: NativeKMeansOptions): Promise<KMeansResult>;
  /**
   * The most arguments each export takes (the addon refuses more): "fn" for functions,
   * "Class.fn" for static methods, "Class#fn" for methods. A test checks this type against it.
   */
  signatures: Record<string, number>;
}

export interface ModelConfig {
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKeyValueHeads: number;
  headDim: number;
  tieWordEmbeddings: boolean;
  llama3RopeScaling: boolean;
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
  seed?: number | bigint;
  eosTokenIds?: number[];
  padTokenId?: number;
}

export interface NativeModel {
  readonly config: ModelConfig;
  readonly dtype: Dtype;
  readonly parameterCount: number;
  logits(ids: NativeTensor, options?: NativeForwardOptions): NativeTensor;
  /** logits on the libuv pool, without gradients */
  logitsAsync(ids: NativeTensor, options?: NativeForwardOptions): Promise<NativeTensor>;
  hiddenStates(ids: NativeTensor, options?: NativeForwardOptions): NativeTensor;
  head(hidden: NativeTensor, rows?: NativeTensor): NativeTensor;
  setLatentPool(layer: number, A: NativeTensor, B: NativeTensor): void;
  meanPooled(ids: NativeTensor, options?: Omit<NativeForwardOptions, 'latent'>): NativeTensor;
  generateAsync(ids: NativeTensor, options?: NativeGenerateOptions): Promise<NativeTensor>;
  mergeLora(): void;
  /** freezes the adapters beneath the base; returns the stacked count per adapted layer */
  stackLora(): number;
  readonly stackedAdapters: number;
  weights(): Record<string, NativeTensor>;
  setBaseTrainable(trainable: boolean): void;
  addLora(targets: string[], options?: { r?: number; loraAlpha?: number; rslora?: boolean; seed?: number | bigint }): void;
  loraParameters(): Record<string, NativeTensor>;
  dispose(): void;
}

export interface NativeAdamWOptions {
  lr?: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
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
}

/** Everything one training step needs, read once natively. */
export interface NativeStep {
  method: 'sft' | 'flashback' | 'jfa';
  alpha?: number;
  kl?: KlKind;
  reduction?: Reduction;
  pcgrad?: boolean;
  maxGradNorm?: number;
  seed?: number | bigint;
  plainSftWeight?: number;
  lr: number;
  timings?: boolean;
  batches: NativeStepBatch[];
}

/** Milliseconds per phase of a training step; `total` is the whole step. */
export interface NativeStepTimings {
  /** the trained model's forward passes */
  forward: number;
  /** the reference forward passes (flashbacks) */
  refForward: number;
  /** the fused loss kernels (value and gradient of the logits) and reading the loss back */
  loss: number;
  backward: number;
  /** taking each micro-batch's gradients apart from the parameters */
  gradCollect: number;
  /** PCGrad (or the mean) and setting the combined gradients */
  projection: number;
  clip: number;
  optimizer: number;
  total: number;
}

export interface NativeStepMetrics {
  sft: number;
  /** mean of the plain (latent off) SFT loss where plainSftWeight added it, else 0 */
  plainSft: number;
  divergence: number;
  gradNorm: number;
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
  step(lr?: number): void;
  /** a whole step (forward, backward, divergence, PCGrad, clipping, AdamW) on the libuv pool */
  trainStepAsync(model: NativeModel, step: NativeStep): Promise<NativeStepMetrics>;
  dispose(): void;
}

/** What scripts/build-native.mjs records beside the binary. */
export interface BuildRecord {
  torchVersion: string;
  torchCuda: boolean;
  faissVersion: string;
  platform: string;
  builtAt: string;
}

export interface LoadedNative {
  addon: NativeAddon;
  binaryPath: string;
  binaryKind: 'prebuilt' | 'source build';
  build: BuildRecord;
  libtorch: LibtorchLocation;
  loadMs: number;
}

export class NativeLoadError extends Error {
  constructor(
    message: string,
    readonly problems: string[],
  ) {
    super(message);
    this.name = 'NativeLoadError';
  }
}

interface BinaryCandidate {
  path: string;
  kind: LoadedNative['binaryKind'];
  dir: string;
}

// Only node-gyp-build's resolver is used, not its loader: the addon loads after libtorch is opened.
const nodeGypBuild = createRequire(import.meta.url)('node-gyp-build') as { path(dir: string): string };

function findBinary(tried: string[]): BinaryCandidate | undefined {
  try {
    const path = nodeGypBuild.path(packageRoot);
    const dir = dirname(path);
    return { path, dir, kind: basename(dirname(dir)) === 'prebuilds' ? 'prebuilt' : 'source build' };
  } catch (e) {
    const why = (e as Error).message.trim().split(/\s*\n\s*/).join('; ');
    tried.push(
      `${rel(join(packageRoot, 'build', 'Release'))}/*.node (missing)`,
      `${rel(join(packageRoot, 'prebuilds', `${process.platform}-${process.arch}`))}/*.node (none fits; node-gyp-build: ${why})`,
    );
    return undefined;
  }
}

const rel = (p: string): string => relative(process.cwd(), p) || '.';

const FIX_BUILD =
  'Fix: in a checkout, run `npm run setup`; in a project, reinstall jfa-torch (`npm rebuild jfa-torch` builds from source with LIBTORCH set).';

function readBuildRecord(dir: string): BuildRecord | undefined {
  const file = join(dir, 'jfa_torch.build.json');
  if (!existsSync(file)) return undefined;
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as BuildRecord;
  } catch {
    return undefined;
  }
}

// Dependency order: each library is opened after the ones it needs.
const TORCH_LIBRARIES = ['libc10.so', 'libtorch_cpu.so', 'libc10_cuda.so', 'libtorch_cuda.so', 'libtorch.so'];

/** Loads a Node-API module whatever its file name (require() only treats *.node as native). */
function dlopenModule<T>(path: string): T {
  const module = { exports: {} };
  process.dlopen(module, path);
  return module.exports as T;
}

function openLibtorch(binaryDir: string, libtorch: LibtorchLocation): void {
  const preload = dlopenModule<{ open(path: string): boolean }>(join(binaryDir, 'jfa_preload.so'));
  for (const name of TORCH_LIBRARIES) {
    const path = join(libtorch.libDir, name);
    if (existsSync(path)) preload.open(path);
  }
}

let loaded: LoadedNative | undefined;

/** Loads the addon once; later calls return the same result. Throws NativeLoadError. */
export function loadNative(): LoadedNative {
  if (loaded) return loaded;
  const started = performance.now();
  const tried: string[] = [];
  const binary = findBinary(tried);
  const torch = locateLibtorch();
  const problems: string[] = [];
  if (!binary) problems.push(`addon: not found; looked for ${tried.join(' and ')}. ${FIX_BUILD}`);
  if (!torch.found) {
    const where = torch.tried.map((t) => `${t.source} ${t.path} (${t.problem})`).join('; ');
    problems.push(
      `libtorch: not found; looked in ${where}. Fix: run \`npm run setup\`, or set LIBTORCH to an unpacked libtorch or a torch Python package directory.`,
    );
  }
  const build = binary && readBuildRecord(binary.dir);
  if (binary && !build) problems.push(`addon: ${rel(binary.dir)}/jfa_torch.build.json is missing or unreadable. ${FIX_BUILD}`);
  if (build && torch.found && baseVersion(build.torchVersion) !== baseVersion(torch.found.version)) {
    problems.push(
      `libtorch: the addon (${rel(binary!.path)}) was built against libtorch ${build.torchVersion}, but the libtorch found ` +
        `(${torch.found.source}: ${torch.found.root}) is ${torch.found.version}. Fix: point LIBTORCH at libtorch ` +
        `${baseVersion(build.torchVersion)} (e.g. \`pip install torch==${baseVersion(build.torchVersion)}\` into .venv), ` +
        `or rebuild the addon against this one with \`npm run build:native\`.`,
    );
  }
  if (problems.length || !binary || !build || !torch.found) {
    throw new NativeLoadError(`jfa-torch could not load its native addon:\n- ${problems.join('\n- ')}`, problems);
  }
  let addon: NativeAddon;
  try {
    openLibtorch(binary.dir, torch.found);
    addon = dlopenModule<NativeAddon>(binary.path);
  } catch (e) {
    const problem = `loading ${binary.path} with libtorch ${torch.found.version} from ${torch.found.libDir} failed: ${(e as Error).message}`;
    throw new NativeLoadError(`jfa-torch could not load its native addon:\n- ${problem}\n${FIX_BUILD}`, [problem]);
  }
  loaded = {
    addon,
    binaryPath: binary.path,
    binaryKind: binary.kind,
    build,
    libtorch: torch.found,
    loadMs: performance.now() - started,
  };
  return loaded;
}

/** The loaded addon's exports. */
export function native(): NativeAddon {
  return (loaded ?? loadNative()).addon;
}

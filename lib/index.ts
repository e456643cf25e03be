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
  type DeviceOption,
  zeros,
} from './tensor.js';
export {
  AbortError,
  CallbackError,
  CheckpointError,
  type CodedError,
  DataError,
  DistributedError,
  ERROR_CODES,
  type ErrorCode,
  isJfaError,
  ModelFormatError,
  NamedError,
  OptionError,
} from './errors.js';
export { checkDevice, cudaAvailable, type Device } from './device.js';
export {
  cudaSynchronize,
  emptyCpuCache,
  emptyCudaCache,
  type GpuStats,
  type MemoryStats,
  memoryStats,
  nativeLocation,
  resetPeakMemory,
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
export { NativeLoadError, type NativeStepMetrics, type NativeStepTimings, type NativeTensor } from './native.js';
export {
  type CrossEntropyOptions,
  type DivergenceOptions,
  flashbackDivergence,
  gpmBasis,
  gpmProject,
  type KlKind,
  latentMixture,
  loraInit,
  loraLinear,
  type LoraLinearOptions,
  loraMerge,
  loraScale,
  loraUnmerge,
  pcgrad,
  type PcgradOptions,
  pcgradOrders,
  type PcgradResult,
  type Reduction,
  tokenCrossEntropy,
} from './kernels.js';
export { loadSafetensors, type SafetensorsContents, saveSafetensors } from './model/safetensors.js';
export { type ForwardOptions, type GenerateOptions, LlamaModel, loadModel, type ModelConfig } from './model/llama.js';
export { type AdapterShape, FUSED_LORA_TARGETS, LORA_DEFAULTS, LORA_TARGETS, type LoraConfig, type LoraTarget } from './model/peft.js';
export { byteLevelTokenizer, createModel, type CreateModelOptions } from './model/create.js';
export { type Batch, type ChatMessage, Tokenizer, type TokenizerConfig } from './model/tokenizer.js';
export { type FinishReason, type GeneratedText, generateStream, type GenerateStreamOptions, generateText, type GenerateTextOptions } from './model/generate.js';
export { Decoder } from './model/decoder.js';
export { type ContinuousOptions, generateContinuous } from './model/continuous.js';
export { IncrementalText } from './model/text-stream.js';
export * from './data/index.js';
export { AdamW, type AdamWOptions, clipGradNorm, cosineWithWarmup } from './optim.js';
export { promptBatch, type PromptBatch, promptText, sftBatch, type SftBatch } from './jfa/examples.js';
export { embedRecords, type LatentOptions, type LatentParts, LatentTasks, type Retrieval } from './jfa/latent.js';
export { findLatentPool, LATENT_MODES, LATENT_POOL_FILE, LATENT_POOL_FORMAT, LATENT_POOL_VERSION, type LatentMode, LatentPool } from './jfa/pool.js';
export { type MicroBatch, STEP_DEFAULTS, type StepOptions, type StepPenalties, type EwcPenalty, type OloraPenalty, type PaceNoise, type StepResult, type StepSwitches, type StepTimings, stepTimings, trainStep } from './jfa/step.js';
export { type Method, METHOD_PRESETS, type MethodPreset, METHODS, presetOf } from './jfa/methods.js';
export { checkTrainOptions, TRAIN_DEFAULTS, TRAIN_OPTION_NAMES } from './jfa/plan.js';
export { keepReference, referenceKeeping, type Precision, type StepProgress, train, type TrainData, type TrainEvals, type TrainOptions, type TrainResult } from './jfa/trainer.js';
export { type EvalBatchProgress, type EvalPredictions, type EvalProgress, type EvalScores, type NewEvalScores, type OldEvalScores, type ForgettingStop, KEEP_BEST, type KeepBest, spreadSample } from './jfa/evals.js';
export {
  accumulateFlashbacks,
  columnForgetting,
  CONTINUAL_FILE,
  type ContinualChain,
  continualMetrics,
  type ContinualMetrics,
  CONTINUE_MODES,
  type ContinueMode,
  DEFAULT_CONTINUE_MODE,
  loadAdapterWithRounds,
  loadRounds,
  type PreviousRun,
  PROMPTS_FILE,
  readRun,
  type RoundFiles,
} from './jfa/continual.js';
export { checkDistributed, DEFAULT_DISTRIBUTED_TIMEOUT_MS, DEFAULT_MASTER_PORT, distributedFromEnv, type DistributedOptions, ncclBuilt, ProcessGroup } from './distributed.js';
export { loadRun, type LoadedRun, type LoadRunOptions } from './jfa/run.js';
export { mergeAdapter, type MergeOptions, type MergeResult } from './jfa/merge.js';
export { exportGguf, type ExportGgufOptions, type ExportGgufResult } from './jfa/export.js';
export { encodeTensor, fromHalfBits, GGUF_ALIGNMENT, GGUF_TENSOR_TYPES, type GgufTensor, type GgufTensorType, type GgufTypedValue, type GgufValue, type GgufValueTypes, toHalfBits, writeGguf } from './model/gguf.js';
export { interleaveHeads, llamaGguf, llamaLoraGguf, type LlamaGgufContents, type LlamaGgufOptions } from './model/gguf-llama.js';
export { EVAL_DEFAULTS, evaluateByFormat, evaluateNew, evaluateOld, type EvalOptions } from './jfa/evaluate.js';
export { pretrain, type PretrainOptions, type PretrainResult } from './jfa/pretrain.js';
export { probe, type ProbeOptions } from './jfa/probe.js';
export { learnMerges } from './model/bpe.js';
export { TensorBoardWriter } from './util/tensorboard.js';
export { inspectPython, pinnedTorchVersion, type PythonInfo, setupTorch, SetupTorchError, type SetupTorchOptions, type SetupTorchResult } from './setup-torch.js';
export type { LibtorchLocation } from './locate.js';

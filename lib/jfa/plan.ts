// A training run's plan: every default of train() in one object, which the library, the `jfa train`
// flags (and their --help) and the native step all take their values from.
import { LORA_DEFAULTS } from '../model/llama.js';
import { DEFAULT_CONTINUE_MODE } from './continual.js';
import { STEP_DEFAULTS } from './step.js';

/**
 * Every default of {@link train}'s options. `latentDropout` depends on the latent mode; `pcgrad`
 * and whether latent tasks are used come with the method. The step's loss and clipping settings,
 * the LoRA shape and the continue mode are written where their layer is, and gathered here.
 */
export const TRAIN_DEFAULTS = {
  epochs: 1,
  microBatch: 4,
  accumulation: 4,
  flashbackMicroBatches: 1,
  maxTokens: 256,
  lr: 1e-4,
  warmupRatio: 0.1,
  weightDecay: 0,
  maxGradNorm: STEP_DEFAULTS.maxGradNorm,
  alpha: STEP_DEFAULTS.alpha,
  kl: STEP_DEFAULTS.kl,
  reduction: STEP_DEFAULTS.reduction,
  latent: true,
  latentMode: 'retrieve',
  latentDropout: { retrieve: 0, drop: 0.5 },
  plainSftWeight: STEP_DEFAULTS.plainSftWeight,
  lora: { r: LORA_DEFAULTS.r, loraAlpha: LORA_DEFAULTS.loraAlpha },
  seed: 0,
  cacheReference: true,
  continueMode: DEFAULT_CONTINUE_MODE,
} as const;

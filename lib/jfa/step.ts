// One optimisation step of the trainer over an accumulation window of micro-batches, run whole in
// native code (native/core/train_step.cpp) behind one asynchronous call:
// new-task micro-batches contribute token cross-entropy (SFT); flashback micro-batches contribute
// alpha x the divergence between the model and its reference (the same model with adapters and
// latent increments off, run without gradients, and only for flashbacks). Each micro-batch's
// gradient is kept apart; PCGrad (or a plain mean) combines them; then clipping and AdamW.
import { type ProcessGroup } from '../distributed.js';
import { asDistributedError } from '../distributed.js';
import { type KlKind, type Reduction } from '../kernels.js';
import { type LlamaModel, modelHandle } from '../model/llama.js';
import { type NativeStepBatch, type NativeStepMetrics, type NativeStepTimings } from '../native.js';
import { type AdamW } from '../optim.js';
import { optionalHandle as h, type Tensor } from '../tensor.js';
import { type Method, presetOf } from './methods.js';

/**
 * What a step does with its micro-batches; the native step sees these, never a method's name.
 * New-task micro-batches always add their cross-entropy.
 */
export interface StepSwitches {
  /** flashback micro-batches add alpha x the divergence to the reference (else they are skipped) */
  divergence: boolean;
  /** micro-batches' latent tasks apply (else they are ignored) */
  latent: boolean;
}

/** One micro-batch of a {@link trainStep}: new-task examples or flashback prompts. */
export interface MicroBatch {
  /** new-task examples (SFT loss) or flashback prompts (divergence) */
  kind: 'new' | 'flashback';
  /** (b, t) int64 token ids */
  ids: Tensor;
  /** (b, t) uint8, 1 at real tokens */
  attentionMask: Tensor;
  /** new-task micro-batches: next-token targets, -100 where nothing is predicted */
  targets?: Tensor;
  /**
   * flashback micro-batches: the reference's final hidden states (adapters and latent tasks off)
   * for these ids, when the caller keeps them (the base is frozen, so they never change); computed
   * here when absent
   */
  referenceHidden?: Tensor;
  /**
   * flashback micro-batches: the reference's logits (b, t, vocab) for these ids, when the caller
   * keeps them; the LM head then does not run for the reference either (takes precedence over
   * referenceHidden)
   */
  referenceLogits?: Tensor;
  /** latent tasks of each sample (jfa with latent tasks) */
  latent?: { indices: Tensor; weights: Tensor };
  /**
   * data-parallel: this rank's share of the whole micro-batch's loss, its real tokens over the
   * micro-batch's (default 1); a shard with no rows has ids of shape (0, t)
   */
  weight?: number;
}

/**
 * {@link trainStep}'s settings when not given. train() shares the loss and clipping ones (its
 * TRAIN_DEFAULTS takes them from here); the addon has none of its own.
 */
export const STEP_DEFAULTS = {
  /** weight of the flashback divergence */
  alpha: 1,
  /** the divergence's KL */
  kl: 'symmetric',
  /** the divergence's reduction over tokens */
  reduction: 'mean',
  /** clip the combined gradient's norm to this: 1.0, as transformers' Trainer, which is what users of a fine-tuning loop expect */
  maxGradNorm: 1,
  /** weight of the extra SFT loss with the latent increments off */
  plainSftWeight: 0,
  /** combine micro-batch gradients by their mean (train() takes PCGrad from the method) */
  pcgrad: false,
  /** seed of PCGrad's visiting orders */
  seed: 0,
} as const;

/** Options of {@link trainStep}. */
export interface StepOptions {
  /**
   * Which losses apply: a method's name (its preset's flashbacks and latent tasks; PCGrad stays
   * this call's `pcgrad`), or the switches themselves.
   */
  method: Method | StepSwitches;
  /** weight of the divergence (default 1, as train()'s) */
  alpha?: number;
  /** the divergence's KL (default symmetric) */
  kl?: KlKind;
  /** the divergence's reduction over tokens (default mean) */
  reduction?: Reduction;
  /** combine micro-batch gradients with PCGrad instead of their mean (default false) */
  pcgrad?: boolean;
  /** clip the combined gradient's norm to this (default 1.0, as train()'s) */
  maxGradNorm?: number;
  /** seed of PCGrad's visiting orders for this step (default 0) */
  seed?: number;
  /**
   * With latent tasks: weight of an extra SFT loss with the latent increments off, on new-task
   * micro-batches that carry increments, so that the adapter also learns to serve alone (default 0: none)
   */
  plainSftWeight?: number;
  /**
   * Penalties on the adapters, whose gradients join the combined gradient before clipping (see
   * {@link StepPenalties}); none by default
   */
  penalties?: StepPenalties;
  /** When given, the milliseconds spent in each phase of the step are added to it (benchmarks). */
  timings?: StepTimings;
  /**
   * data-parallel: each micro-batch's gradients are summed over this group's ranks before PCGrad
   * or the mean (each rank passes its shard, weighted), and the losses reported are the sums
   */
  group?: ProcessGroup;
  /** with group: one flat buffer per micro-batch (default) or one all-reduce per tensor */
  bucket?: 'flat' | 'tensor';
}

/** The regularisers of {@link trainStep} (methods ewc, o-lora and pace), each absent when off. */
export interface StepPenalties {
  /** EWC: lambda x the sum over adapted layers of F * (scale B A)^2 */
  ewc?: EwcPenalty;
  /** O-LoRA: lambda x the sum over adapted layers of ||A A_old^T||_F^2 */
  olora?: OloraPenalty;
  /** PACE: noise on the adapters' outputs and a consistency loss between two perturbed passes */
  pace?: PaceNoise;
}

/** EWC's penalty of a step ({@link StepPenalties}). */
export interface EwcPenalty {
  /** the penalty's weight */
  lambda: number;
  /** one float32 tensor of the base weight's shape per adapted layer, in loraParameters' order: the diagonal Fisher */
  fisher: Tensor[];
}

/** O-LoRA's penalty of a step ({@link StepPenalties}). */
export interface OloraPenalty {
  /** the penalty's weight */
  lambda: number;
  /** one (R, in) tensor per adapted layer, in loraParameters' order: the earlier rounds' A of that layer stacked by rows (R = 0: none) */
  previous: Tensor[];
}

/**
 * PACE's noise of a step ({@link StepPenalties}): new-task micro-batches run with each adapter's
 * output multiplied by (1 + eps), eps ~ N(0, sigma^2) per element, drawn from the step's seed; their
 * loss adds lambda x the mean over real tokens of the squared distance between the final hidden
 * states of two such passes.
 */
export interface PaceNoise {
  /** the noise's standard deviation */
  sigma: number;
  /** the consistency's weight (0: one perturbed pass, no consistency) */
  lambda: number;
}

/** Milliseconds per phase of trainStep, accumulated over calls; `total` is the whole call. */
export type StepTimings = NativeStepTimings;

/**
 * Zeroed {@link StepTimings}, for {@link StepOptions.timings} to accumulate into.
 * @returns every phase at 0 ms.
 * @example
 * ```ts
 * const b = sftBatch(tokenizer, records, 256);
 * const timings = stepTimings();
 * await trainStep(model, optimizer, [{ kind: 'new', ids: b.ids, attentionMask: b.attentionMask, targets: b.targets }], { method: 'jfa', timings });
 * console.log(timings.forward, timings.total);
 * ```
 */
export function stepTimings(): StepTimings {
  return { forward: 0, refForward: 0, loss: 0, backward: 0, gradCollect: 0, allreduce: 0, projection: 0, clip: 0, optimizer: 0, total: 0 };
}

/** A step's losses and gradient statistics (see {@link NativeStepMetrics}). */
export type StepResult = Omit<NativeStepMetrics, 'timings'>;

/**
 * Runs one step natively on the libuv pool: every micro-batch's forward and backward, the
 * combination (PCGrad or the mean), clipping and AdamW at optimizer.lr. The event loop stays free
 * meanwhile; the model refuses forwards and changes until the step settles, and the micro-batches'
 * tensors must stay alive until then.
 * @param model - the model being trained (with adapters for LoRA training).
 * @param optimizer - AdamW over the trained parameters; its lr is used.
 * @param micro - the accumulation window's micro-batches.
 * @param o - method, divergence weight, PCGrad, clipping.
 * @returns a promise of the step's losses, gradient norm and PCGrad conflicts.
 * @throws (rejects with) TypeError/RangeError for bad micro-batches or options; Error when another step is running on the model.
 * @example
 * ```ts
 * const b = sftBatch(tokenizer, records, 256);
 * const f = promptBatch(tokenizer, flashbacks, 256);
 * const r = await trainStep(model, optimizer, [
 *   { kind: 'new', ids: b.ids, attentionMask: b.attentionMask, targets: b.targets },
 *   { kind: 'flashback', ids: f.ids, attentionMask: f.attentionMask },
 * ], { method: 'flashback', alpha: 1, maxGradNorm: 1 });
 * console.log(r.sft, r.divergence);
 * ```
 */
export async function trainStep(model: LlamaModel, optimizer: AdamW, micro: MicroBatch[], o: StepOptions): Promise<StepResult> {
  const batches: NativeStepBatch[] = micro.map((mb) => ({
    kind: mb.kind,
    ids: mb.ids.handle,
    attentionMask: h(mb.attentionMask),
    targets: h(mb.targets),
    referenceLogits: h(mb.referenceLogits),
    referenceHidden: h(mb.referenceHidden),
    latent: mb.latent && { indices: mb.latent.indices.handle, weights: mb.latent.weights.handle },
    weight: mb.weight ?? 1,
  }));
  // The addon requires every setting: its defaults are STEP_DEFAULTS, nowhere else.
  const r = await optimizer.handle.trainStepAsync(modelHandle(model), {
    ...switchesOf(o.method),
    alpha: o.alpha ?? STEP_DEFAULTS.alpha,
    kl: o.kl ?? STEP_DEFAULTS.kl,
    reduction: o.reduction ?? STEP_DEFAULTS.reduction,
    pcgrad: o.pcgrad ?? STEP_DEFAULTS.pcgrad,
    maxGradNorm: o.maxGradNorm ?? STEP_DEFAULTS.maxGradNorm,
    seed: o.seed ?? STEP_DEFAULTS.seed,
    plainSftWeight: o.plainSftWeight ?? STEP_DEFAULTS.plainSftWeight,
    ...penaltiesOf(o.penalties),
    lr: optimizer.lr,
    timings: Boolean(o.timings),
    ...(o.group ? { group: o.group.handle, bucket: o.bucket ?? 'flat' } : {}),
    batches,
  }).catch((e: unknown) => {
    throw o.group ? asDistributedError(e) : e;
  });
  optimizer.stepCount += 1;
  if (o.timings && r.timings) for (const k of Object.keys(r.timings) as (keyof StepTimings)[]) o.timings[k] += r.timings[k];
  return { sft: r.sft, plainSft: r.plainSft, divergence: r.divergence, penalty: r.penalty, gradNorm: r.gradNorm, conflicts: r.conflicts };
}

/** The native step's penalty fields: every one given, zeros and empty lists for what is off. */
function penaltiesOf(p: StepPenalties | undefined) {
  return {
    ewcLambda: p?.ewc?.lambda ?? 0,
    ewcFisher: p?.ewc ? p.ewc.fisher.map((t) => t.handle) : [],
    oloraLambda: p?.olora?.lambda ?? 0,
    oloraPrevious: p?.olora ? p.olora.previous.map((t) => t.handle) : [],
    paceSigma: p?.pace?.sigma ?? 0,
    paceLambda: p?.pace?.lambda ?? 0,
  };
}

function switchesOf(method: Method | StepSwitches): StepSwitches {
  if (typeof method === 'object' && method !== null) return { divergence: method.divergence, latent: method.latent };
  const preset = presetOf(method, 'trainStep');
  return { divergence: preset.flashbacks, latent: preset.latent };
}

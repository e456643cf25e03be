// Optimisation for training: AdamW with its moment buffers, gradient clipping, and the cosine
// schedule with linear warm-up (as transformers' get_cosine_schedule_with_warmup).
import { native, type NativeOptimizer } from './native.js';
import { h, Tensor } from './tensor.js';

/** Options of {@link AdamW}, as torch.optim.AdamW's. */
export interface AdamWOptions {
  /** Learning rate (default 1e-3); change it later through {@link AdamW.lr}. */
  lr?: number;
  /** Decay rates of the moment estimates (default [0.9, 0.999]). */
  betas?: [number, number];
  /** Added to the denominator (default 1e-8). */
  eps?: number;
  /** Decoupled weight decay (default 0.01). */
  weightDecay?: number;
}

/**
 * AdamW over a fixed list of parameters. Its moment buffers live in native code (the addon's
 * Optimizer), where a training step (lib/jfa/step.ts) runs whole; expAvg, expAvgSq and steps are
 * handles onto them, so checkpoints read and restore them in place.
 */
export class AdamW implements Disposable {
  /** First-moment estimates, one per parameter. */
  readonly expAvg: Tensor[];
  /** Second-moment estimates, one per parameter. */
  readonly expAvgSq: Tensor[];
  /** Updates made to each parameter (int64): a parameter without a gradient in a step is skipped. */
  readonly steps: Tensor;
  /** Optimisation steps taken (step() and training steps). */
  stepCount = 0;
  /** The learning rate of the next step; a schedule sets it before each. */
  lr: number;
  /** @internal the addon's optimizer, which owns the state */
  readonly handle: NativeOptimizer;

  /**
   * AdamW over `params`, its state zero.
   * @param params - the parameters to train (they must require gradients).
   * @param options - lr, betas, eps and weight decay.
   * @throws TypeError/RangeError for a non-tensor parameter or a bad option.
   * @example
   * ```ts
   * const params = Object.values(model.loraParameters());
   * const optimizer = new AdamW(params, { lr: 2e-4, weightDecay: 0 });
   * ```
   */
  constructor(
    /** The parameters it updates. */
    readonly params: Tensor[],
    options: AdamWOptions = {},
  ) {
    this.lr = options.lr ?? 1e-3;
    const [beta1, beta2] = options.betas ?? [0.9, 0.999];
    this.handle = new (native().Optimizer)(params.map(h), { lr: this.lr, beta1, beta2, eps: options.eps ?? 1e-8, weightDecay: options.weightDecay ?? 0.01 });
    this.expAvg = this.handle.expAvg.map((t) => new Tensor(t));
    this.expAvgSq = this.handle.expAvgSq.map((t) => new Tensor(t));
    this.steps = new Tensor(this.handle.steps);
  }

  /**
   * One AdamW update from the parameters' current gradients, at this.lr.
   * @example
   * ```ts
   * const b = sftBatch(tokenizer, records, 256);
   * const loss = tokenCrossEntropy(model.logits(b.ids, { attentionMask: b.attentionMask }), b.targets);
   * loss.backward();
   * optimizer.step();
   * optimizer.zeroGrad();
   * ```
   */
  step(): void {
    this.handle.step(this.lr);
    this.stepCount += 1;
  }

  /**
   * Drops every parameter's accumulated gradient.
   * @example
   * ```ts
   * optimizer.zeroGrad();
   * ```
   */
  zeroGrad(): void {
    for (const p of this.params) p.zeroGrad();
  }

  /**
   * Frees the moment buffers now (the parameters stay).
   * @example
   * ```ts
   * optimizer.dispose();
   * ```
   */
  dispose(): void {
    for (const t of [...this.expAvg, ...this.expAvgSq, this.steps]) t.dispose();
    this.handle.dispose();
  }
  /**
   * {@link AdamW.dispose}, for `using` declarations.
   * @example
   * ```ts
   * { using optimizer = new AdamW(Object.values(model.loraParameters())); }
   * ```
   */
  [Symbol.dispose](): void {
    this.dispose();
  }
}

/**
 * Scales the parameters' gradients so their total L2 norm is at most maxNorm.
 * @param params - parameters whose gradients to clip (those without one are skipped).
 * @param maxNorm - the largest total norm, positive.
 * @returns the total norm before clipping.
 * @throws RangeError for a non-positive maxNorm.
 * @example
 * ```ts
 * const norm = clipGradNorm(Object.values(model.loraParameters()), 1.0); // after backward(), before the step
 * ```
 */
export function clipGradNorm(params: Tensor[], maxNorm: number): number {
  return native().clipGradNorm(params.map(h), maxNorm);
}

/**
 * The learning-rate factor at `step` (0-based): linear warm-up, then a half cosine down to 0,
 * as transformers' get_cosine_schedule_with_warmup.
 * @param step - the step, 0-based.
 * @param warmupSteps - steps of linear warm-up.
 * @param totalSteps - all steps.
 * @returns the factor, from 0 to 1.
 * @example
 * ```ts
 * for (let step = 0; step < 100; step++) {
 *   optimizer.lr = 2e-4 * cosineWithWarmup(step, 10, 100);
 *   // ... forward, backward, optimizer.step()
 * }
 * ```
 */
export function cosineWithWarmup(step: number, warmupSteps: number, totalSteps: number): number {
  if (step < warmupSteps) return step / Math.max(1, warmupSteps);
  const progress = (step - warmupSteps) / Math.max(1, totalSteps - warmupSteps);
  return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * progress)));
}

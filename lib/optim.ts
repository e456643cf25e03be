// Optimisation for training: AdamW with its moment buffers, gradient clipping, and the cosine
// schedule with linear warm-up (as transformers' get_cosine_schedule_with_warmup).
import { native, type NativeOptimizer } from './native.js';
import { h, Tensor } from './tensor.js';

export interface AdamWOptions {
  lr?: number;
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
}

/**
 * AdamW over a fixed list of parameters. Its moment buffers live in native code (the addon's
 * Optimizer), where a training step (lib/jfa/step.ts) runs whole; expAvg, expAvgSq and steps are
 * handles onto them, so checkpoints read and restore them in place.
 */
export class AdamW implements Disposable {
  readonly expAvg: Tensor[];
  readonly expAvgSq: Tensor[];
  /** Updates made to each parameter (int64): a parameter without a gradient in a step is skipped. */
  readonly steps: Tensor;
  stepCount = 0;
  lr: number;
  /** @internal the addon's optimizer, which owns the state */
  readonly handle: NativeOptimizer;

  constructor(
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

  /** One AdamW update from the parameters' current gradients, at this.lr. */
  step(): void {
    this.handle.step(this.lr);
    this.stepCount += 1;
  }

  zeroGrad(): void {
    for (const p of this.params) p.zeroGrad();
  }

  dispose(): void {
    for (const t of [...this.expAvg, ...this.expAvgSq, this.steps]) t.dispose();
    this.handle.dispose();
  }
  [Symbol.dispose](): void {
    this.dispose();
  }
}

/** Scales the parameters' gradients so their total L2 norm is at most maxNorm; returns the norm before. */
export function clipGradNorm(params: Tensor[], maxNorm: number): number {
  return native().clipGradNorm(params.map(h), maxNorm);
}

/** The learning-rate factor at `step` (0-based): linear warm-up, then a half cosine down to 0. */
export function cosineWithWarmup(step: number, warmupSteps: number, totalSteps: number): number {
  if (step < warmupSteps) return step / Math.max(1, warmupSteps);
  const progress = (step - warmupSteps) / Math.max(1, totalSteps - warmupSteps);
  return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * progress)));
}

// Optimisation for training: AdamW with its moment buffers, gradient clipping, and the cosine
// schedule with linear warm-up (as transformers' get_cosine_schedule_with_warmup).
import { native } from './native.js';
import { h, type Tensor, zeros } from './tensor.js';

export interface AdamWOptions {
  lr?: number;
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
}

/** AdamW over a fixed list of parameters; step() reads their .grad and updates them in place. */
export class AdamW implements Disposable {
  readonly expAvg: Tensor[];
  readonly expAvgSq: Tensor[];
  /** Updates made to each parameter (int64): a parameter without a gradient in a step is skipped. */
  readonly steps: Tensor;
  stepCount = 0;
  lr: number;
  private readonly betas: [number, number];
  private readonly eps: number;
  private readonly weightDecay: number;

  constructor(
    readonly params: Tensor[],
    options: AdamWOptions = {},
  ) {
    this.lr = options.lr ?? 1e-3;
    this.betas = options.betas ?? [0.9, 0.999];
    this.eps = options.eps ?? 1e-8;
    this.weightDecay = options.weightDecay ?? 0.01;
    this.expAvg = params.map((p) => zeros(p.shape, p.dtype));
    this.expAvgSq = params.map((p) => zeros(p.shape, p.dtype));
    this.steps = zeros([params.length], 'int64');
  }

  step(): void {
    this.stepCount += 1;
    native().adamwStep(this.params.map(h), this.expAvg.map(h), this.expAvgSq.map(h), h(this.steps), this.lr, this.betas[0], this.betas[1], this.eps, this.weightDecay);
  }

  zeroGrad(): void {
    for (const p of this.params) p.zeroGrad();
  }

  dispose(): void {
    for (const t of [...this.expAvg, ...this.expAvgSq, this.steps]) t.dispose();
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

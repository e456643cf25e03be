// The JFA compute kernels: LoRA linear, the flashback divergence and token cross-entropy,
// gradient projection (PCGrad, GPM) and the latent-task mixture. All run natively with explicit
// backward passes inside libtorch's autograd; see native/core for the math.
import { type KlKind, native, type Reduction } from './native.js';
import { h, optionalHandle as opt, Tensor } from './tensor.js';

export type { KlKind, Reduction };


export interface LoraLinearOptions {
  bias?: Tensor;
  /** lora_alpha / r (see loraScale). Default 1. */
  scale?: number;
  /** Dropout on the LoRA branch's input during training, as PEFT's lora_dropout. Default 0. */
  dropout?: number;
  /** Seed of the dropout mask. */
  seed?: number | bigint;
}

/** y = x W^T + bias + scale * (dropout(x) A^T) B^T. W (out, in), A (r, in), B (out, r), x (..., in). */
export function loraLinear(x: Tensor, W: Tensor, A: Tensor, B: Tensor, options: LoraLinearOptions = {}): Tensor {
  return new Tensor(native().loraLinear(h(x), h(W), h(A), h(B), { bias: opt(options.bias), scale: options.scale ?? 1, dropout: options.dropout ?? 0, seed: options.seed }));
}

/** PEFT's scaling: loraAlpha / r, or loraAlpha / sqrt(r) with rsLoRA. */
export function loraScale(loraAlpha: number, r: number, options: { rslora?: boolean } = {}): number {
  return native().loraScale(loraAlpha, r, options.rslora ?? false);
}

/** PEFT's initialisation, in place: A kaiming-uniform (a = sqrt 5) or gaussian (std 1/r), B zero. */
export function loraInit(A: Tensor, B: Tensor, options: { init?: 'kaiming' | 'gaussian'; seed?: number | bigint } = {}): void {
  native().loraInit(h(A), h(B), { init: options.init ?? 'kaiming', seed: options.seed });
}

/** W += scale * B A, in place (the adapter folded into the base weight). */
export function loraMerge(W: Tensor, A: Tensor, B: Tensor, scale: number): void {
  native().loraMerge(h(W), h(A), h(B), { scale, unmerge: false });
}

/** W -= scale * B A, in place: undoes loraMerge. */
export function loraUnmerge(W: Tensor, A: Tensor, B: Tensor, scale: number): void {
  native().loraMerge(h(W), h(A), h(B), { scale, unmerge: true });
}

export interface DivergenceOptions {
  /** symmetric (default): KL(ref||cur) + KL(cur||ref); forward: KL(ref||cur); reverse: KL(cur||ref). */
  kind?: KlKind;
  /** mean (default): per real token; sum: over real tokens. */
  reduction?: Reduction;
  /** Both distributions are softmax(logits / temperature). Default 1. */
  temperature?: number;
}

/**
 * The flashback divergence between next-token distributions at every position: `cur` (..., V) from
 * the model being trained (gradients flow here only), `ref` (..., V) from the reference model, `mask`
 * (...) nonzero at real tokens. Returns a scalar.
 */
export function flashbackDivergence(cur: Tensor, ref: Tensor, mask: Tensor, options: DivergenceOptions = {}): Tensor {
  return new Tensor(
    native().flashbackDivergence(h(cur), h(ref), h(mask), { kind: options.kind ?? 'symmetric', reduction: options.reduction ?? 'mean', temperature: options.temperature ?? 1 }),
  );
}

export interface CrossEntropyOptions {
  /** Nonzero where a token counts (e.g. the target, not the prompt). */
  mask?: Tensor;
  /** Targets equal to this never count. Default -100. */
  ignoreIndex?: number;
  reduction?: Reduction;
}

/** Token-level cross-entropy of logits (..., V) against int64 targets (...), as SFT uses it. Returns a scalar. */
export function tokenCrossEntropy(logits: Tensor, targets: Tensor, options: CrossEntropyOptions = {}): Tensor {
  return new Tensor(native().tokenCrossEntropy(h(logits), h(targets), { mask: opt(options.mask), ignoreIndex: options.ignoreIndex ?? -100, reduction: options.reduction ?? 'mean' }));
}

export interface PcgradOptions {
  /** Seed of the random visiting orders (default 0). */
  seed?: number | bigint;
  /** Explicit orders: orders[i] lists every j != i once, the order g_i is projected against them. */
  orders?: number[][];
}

export interface PcgradResult {
  /** Per parameter: the mean of the projected gradients. */
  grads: Tensor[];
  /** How many projections were applied. */
  conflicts: number;
  /** The n x n inner products of the input gradients (row-major). */
  gram: Float64Array;
}

/** PCGrad over n per-micro-batch gradients, each a list of parameter tensors of the same shapes. */
export function pcgrad(grads: Tensor[][], options: PcgradOptions = {}): PcgradResult {
  const handles = Array.isArray(grads) ? grads.map((g) => (Array.isArray(g) ? g.map(h) : g)) : grads;
  const r = native().pcgrad(handles as never, { orders: options.orders, seed: options.seed });
  return { grads: r.grads.map((g) => new Tensor(g)), conflicts: r.conflicts, gram: r.gram };
}

/** The visiting orders pcgrad uses for n gradients and a seed. */
export function pcgradOrders(n: number, seed: number | bigint = 0): number[][] {
  return native().pcgradOrders(n, seed);
}

/**
 * GPM's basis: orthonormal columns (d, k) spanning `threshold` of the energy of `activations`
 * (samples, d), extending `basis` when given.
 */
export function gpmBasis(activations: Tensor, options: { threshold?: number; basis?: Tensor } = {}): Tensor {
  return new Tensor(native().gpmBasis(h(activations), options.threshold ?? 0.97, opt(options.basis)));
}

/** grad - (grad M) M^T: the gradient with its components in the basis' span removed. */
export function gpmProject(grad: Tensor, basis: Tensor): Tensor {
  return new Tensor(native().gpmProject(h(grad), h(basis)));
}

/**
 * The latent-task increment: for each sample b, sum_j weights[b, j] (x_b A[idx]^T) B[idx]^T with
 * idx = indices[b, j]. x (b, t, in) or (b, in); A (P, r, in); B (P, out, r); indices (b, k) int64.
 */
export function latentMixture(x: Tensor, A: Tensor, B: Tensor, indices: Tensor, weights: Tensor): Tensor {
  return new Tensor(native().latentMixture(h(x), h(A), h(B), h(indices), h(weights)));
}

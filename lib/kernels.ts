// The JFA compute kernels: LoRA linear, the flashback divergence and token cross-entropy,
// gradient projection (PCGrad, GPM) and the latent-task mixture. All run natively with explicit
// backward passes inside libtorch's autograd; see native/core for the math.
import { type KlKind, native, type Reduction } from './native.js';
import { h, optionalHandle as opt, Tensor } from './tensor.js';

export type { KlKind, Reduction };


/** Options of {@link loraLinear}. */
export interface LoraLinearOptions {
  /** Added to the base output, shape (out). */
  bias?: Tensor;
  /** lora_alpha / r (see loraScale). Default 1. */
  scale?: number;
  /** Dropout on the LoRA branch's input during training, as PEFT's lora_dropout. Default 0. */
  dropout?: number;
  /** Seed of the dropout mask. */
  seed?: number | bigint;
}

/**
 * A linear layer with a LoRA adapter: y = x W^T + bias + scale * (dropout(x) A^T) B^T.
 * Gradients flow to every input that requires them (in training: A and B).
 * @param x - the input, (..., in).
 * @param W - the frozen base weight, (out, in).
 * @param A - the adapter's down projection, (r, in).
 * @param B - the adapter's up projection, (out, r).
 * @param options - bias, scale, dropout and its seed.
 * @returns y, (..., out).
 * @throws RangeError when the shapes do not chain or dropout is outside [0, 1); TypeError for mismatched dtypes.
 * @example
 * ```ts
 * const [A, B] = [zeros([4, 16]), zeros([32, 4])];
 * loraInit(A, B, { seed: 1 });
 * const y = loraLinear(randn([2, 16]), randn([32, 16]), A, B, { scale: loraScale(8, 4) }); // (2, 32)
 * ```
 */
export function loraLinear(x: Tensor, W: Tensor, A: Tensor, B: Tensor, options: LoraLinearOptions = {}): Tensor {
  return new Tensor(native().loraLinear(h(x), h(W), h(A), h(B), { bias: opt(options.bias), scale: options.scale ?? 1, dropout: options.dropout ?? 0, seed: options.seed }));
}

/**
 * PEFT's scaling: loraAlpha / r, or loraAlpha / sqrt(r) with rsLoRA.
 * @param loraAlpha - PEFT's lora_alpha.
 * @param r - the adapter's rank, a positive integer.
 * @param options - `rslora: true` for rank-stabilised scaling.
 * @returns the scale of the LoRA branch.
 * @throws RangeError for a non-positive or fractional r.
 * @example
 * ```ts
 * loraScale(16, 8); // 2
 * loraScale(16, 4, { rslora: true }); // 8
 * ```
 */
export function loraScale(loraAlpha: number, r: number, options: { rslora?: boolean } = {}): number {
  return native().loraScale(loraAlpha, r, options.rslora ?? false);
}

/**
 * PEFT's initialisation, in place: A kaiming-uniform (a = sqrt 5) or gaussian (std 1/r), B zero.
 * @param A - the down projection (r, in), overwritten.
 * @param B - the up projection (out, r), zeroed.
 * @param options - the init ('kaiming', the default, or 'gaussian') and a seed.
 * @throws RangeError when A and B's ranks differ; TypeError for an unknown init.
 * @example
 * ```ts
 * const A = zeros([8, 64]), B = randn([32, 8]); // r = 8, in = 64, out = 32
 * loraInit(A, B, { init: 'gaussian', seed: 3 });
 * ```
 */
export function loraInit(A: Tensor, B: Tensor, options: { init?: 'kaiming' | 'gaussian'; seed?: number | bigint } = {}): void {
  native().loraInit(h(A), h(B), { init: options.init ?? 'kaiming', seed: options.seed });
}

/**
 * W += scale * B A, in place (the adapter folded into the base weight).
 * @param W - the base weight (out, in), updated.
 * @param A - the down projection (r, in).
 * @param B - the up projection (out, r).
 * @param scale - the LoRA scale (see {@link loraScale}).
 * @throws RangeError when the shapes do not fit.
 * @example
 * ```ts
 * const W = randn([32, 64]), A = randn([8, 64]), B = randn([32, 8]);
 * loraMerge(W, A, B, loraScale(16, 8)); // W now computes base + adapter
 * ```
 */
export function loraMerge(W: Tensor, A: Tensor, B: Tensor, scale: number): void {
  native().loraMerge(h(W), h(A), h(B), { scale, unmerge: false });
}

/**
 * W -= scale * B A, in place: undoes loraMerge.
 * @param W - the merged weight (out, in), updated.
 * @param A - the down projection (r, in).
 * @param B - the up projection (out, r).
 * @param scale - the scale the merge used.
 * @throws RangeError when the shapes do not fit.
 * @example
 * ```ts
 * const W = randn([32, 64]), A = randn([8, 64]), B = randn([32, 8]);
 * loraMerge(W, A, B, loraScale(16, 8));
 * loraUnmerge(W, A, B, loraScale(16, 8)); // W is the base again (up to rounding)
 * ```
 */
export function loraUnmerge(W: Tensor, A: Tensor, B: Tensor, scale: number): void {
  native().loraMerge(h(W), h(A), h(B), { scale, unmerge: true });
}

/** Options of {@link flashbackDivergence}. */
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
 * (...) nonzero at real tokens.
 * @param cur - logits of the model being trained, (..., V).
 * @param ref - logits of the reference model, (..., V).
 * @param mask - nonzero at the positions that count, (...).
 * @param options - kind, reduction and temperature.
 * @returns a scalar tensor.
 * @throws RangeError when the shapes differ or the temperature is not positive.
 * @example
 * ```ts
 * const curLogits = randn([2, 5, 32]).setRequiresGrad(), refLogits = randn([2, 5, 32]); // (b, t, vocab)
 * const mask = tensor([1, 1, 1, 0, 0, 1, 1, 1, 1, 1], [2, 5]); // the first sample's last two tokens are padding
 * const loss = flashbackDivergence(curLogits, refLogits, mask, { kind: 'symmetric' });
 * loss.backward();
 * ```
 */
export function flashbackDivergence(cur: Tensor, ref: Tensor, mask: Tensor, options: DivergenceOptions = {}): Tensor {
  return new Tensor(
    native().flashbackDivergence(h(cur), h(ref), h(mask), { kind: options.kind ?? 'symmetric', reduction: options.reduction ?? 'mean', temperature: options.temperature ?? 1 }),
  );
}

/** Options of {@link tokenCrossEntropy}. */
export interface CrossEntropyOptions {
  /** Nonzero where a token counts (e.g. the target, not the prompt). */
  mask?: Tensor;
  /** Targets equal to this never count. Default -100. */
  ignoreIndex?: number;
  /** mean (default) over counted tokens, or their sum. */
  reduction?: Reduction;
}

/**
 * Token-level cross-entropy of logits (..., V) against int64 targets (...), as SFT uses it.
 * @param logits - (..., V).
 * @param targets - int64 token ids, (...).
 * @param options - mask, ignoreIndex and reduction.
 * @returns a scalar tensor.
 * @throws RangeError when the shapes do not fit or ignoreIndex is not an integer; TypeError for non-int64 targets.
 * @example
 * ```ts
 * const logits = randn([3, 32]).setRequiresGrad(); // 3 positions, vocab 32
 * const loss = tokenCrossEntropy(logits, tensor(new BigInt64Array([5n, 9n, -100n])), { reduction: 'mean' }); // -100: ignored
 * ```
 */
export function tokenCrossEntropy(logits: Tensor, targets: Tensor, options: CrossEntropyOptions = {}): Tensor {
  return new Tensor(native().tokenCrossEntropy(h(logits), h(targets), { mask: opt(options.mask), ignoreIndex: options.ignoreIndex ?? -100, reduction: options.reduction ?? 'mean' }));
}

/** Options of {@link pcgrad}. */
export interface PcgradOptions {
  /** Seed of the random visiting orders (default 0). */
  seed?: number | bigint;
  /** Explicit orders: orders[i] lists every j != i once, the order g_i is projected against them. */
  orders?: number[][];
}

/** What {@link pcgrad} returns. */
export interface PcgradResult {
  /** Per parameter: the mean of the projected gradients. */
  grads: Tensor[];
  /** How many projections were applied. */
  conflicts: number;
  /** The n x n inner products of the input gradients (row-major). */
  gram: Float64Array;
}

/**
 * PCGrad over n per-micro-batch gradients, each a list of parameter tensors of the same shapes:
 * each gradient is projected off the others it conflicts with (negative inner product), in a random order.
 * @param grads - grads[i][p] is micro-batch i's gradient of parameter p.
 * @param options - a seed for the visiting orders, or explicit orders.
 * @returns the combined gradients, the number of projections and the Gram matrix.
 * @throws RangeError for ragged lists, mismatched shapes or bad orders.
 * @example
 * ```ts
 * const { grads, conflicts } = pcgrad([[tensor([1, 0])], [tensor([-1, 1])]], { seed: 0 });
 * ```
 */
export function pcgrad(grads: Tensor[][], options: PcgradOptions = {}): PcgradResult {
  const handles = Array.isArray(grads) ? grads.map((g) => (Array.isArray(g) ? g.map(h) : g)) : grads;
  const r = native().pcgrad(handles as never, { orders: options.orders, seed: options.seed });
  return { grads: r.grads.map((g) => new Tensor(g)), conflicts: r.conflicts, gram: r.gram };
}

/**
 * The visiting orders pcgrad uses for n gradients and a seed.
 * @param n - gradients, an integer from 1 to 4096.
 * @param seed - the seed pcgrad is given (default 0).
 * @returns orders[i]: the other gradients in the order g_i is projected against them.
 * @throws RangeError for a bad n.
 * @example
 * ```ts
 * pcgradOrders(3, 0); // e.g. [[2, 1], [0, 2], [1, 0]]
 * ```
 */
export function pcgradOrders(n: number, seed: number | bigint = 0): number[][] {
  return native().pcgradOrders(n, seed);
}

/**
 * GPM's basis: orthonormal columns (d, k) spanning `threshold` of the energy of `activations`
 * (samples, d), extending `basis` when given.
 * @param activations - (samples, d).
 * @param options - threshold (default 0.97) and a basis (d, k0) to extend.
 * @returns the basis (d, k).
 * @throws RangeError for a threshold outside (0, 1] or a basis of another d.
 * @example
 * ```ts
 * const M = gpmBasis(randn([64, 16]), { threshold: 0.9 });
 * ```
 */
export function gpmBasis(activations: Tensor, options: { threshold?: number; basis?: Tensor } = {}): Tensor {
  return new Tensor(native().gpmBasis(h(activations), options.threshold ?? 0.97, opt(options.basis)));
}

/**
 * grad - (grad M) M^T: the gradient with its components in the basis' span removed.
 * @param grad - (..., d).
 * @param basis - orthonormal columns (d, k), from {@link gpmBasis}.
 * @returns the projected gradient, grad's shape.
 * @throws RangeError when the last dimensions differ.
 * @example
 * ```ts
 * const M = gpmBasis(randn([64, 16]), { threshold: 0.9 });
 * const g2 = gpmProject(randn([4, 16]), M);
 * ```
 */
export function gpmProject(grad: Tensor, basis: Tensor): Tensor {
  return new Tensor(native().gpmProject(h(grad), h(basis)));
}

/**
 * The latent-task increment: for each sample b, sum_j weights[b, j] (x_b A[idx]^T) B[idx]^T with
 * idx = indices[b, j]. x (b, t, in) or (b, in); A (P, r, in); B (P, out, r); indices (b, k) int64.
 * @param x - the layer input.
 * @param A - the pool's down projections.
 * @param B - the pool's up projections.
 * @param indices - each sample's k pool entries (int64).
 * @param weights - each sample's k mixture weights.
 * @returns the increment, (b, t, out) or (b, out).
 * @throws RangeError for shapes that do not fit or an index outside the pool.
 * @example
 * ```ts
 * const x = randn([1, 16]), A = randn([3, 4, 16]), B = randn([3, 8, 4]); // (b, in); a pool of 3: (P, r, in), (P, out, r)
 * const dy = latentMixture(x, A, B, tensor(new BigInt64Array([0n, 2n]), [1, 2]), tensor([0.7, 0.3], [1, 2])); // (1, 8)
 * ```
 */
export function latentMixture(x: Tensor, A: Tensor, B: Tensor, indices: Tensor, weights: Tensor): Tensor {
  return new Tensor(native().latentMixture(h(x), h(A), h(B), h(indices), h(weights)));
}

// The JFA kernels against the PyTorch reference (scripts/reference/kernel_reference.py: PEFT's LoRA layer,
// F.kl_div / F.cross_entropy, Yu et al.'s PCGrad loop, GPM's SVD update, an einsum mixture),
// outputs and every gradient, then bad inputs.
// Tolerances: float32 results within 1e-5 of the reference's largest magnitude (the two sides sum in
// different orders; float32 rounding over these sizes stays near 1e-6); bfloat16 within 2e-2 (bf16
// keeps 8 significant bits, 2^-8 = 0.4%, and its products accumulate a few of those).
import { beforeAll, describe, expect, it } from 'vitest';

import {
  flashbackDivergence,
  gpmBasis,
  gpmProject,
  latentMixture,
  loraInit,
  loraLinear,
  loraMerge,
  loraScale,
  loraUnmerge,
  pcgrad,
  pcgradOrders,
  tokenCrossEntropy,
} from '../lib/kernels.js';
import { matmul, randn, type Tensor, tensor, zeros } from '../lib/tensor.js';
import { expectError } from './helpers.js';
import { type Case, expectClose, type RefTensor, runReference } from './reference.js';

const F32 = 1e-5;
const BF16 = 2e-2;
let seed = 100;
const rnd = (shape: number[]) => randn(shape, { seed: seed++ });
const ids = (values: number[], shape: number[]) => tensor(BigInt64Array.from(values.map(BigInt)), shape);
const mask = (values: number[], shape: number[]) => tensor(Uint8Array.from(values), shape);

// ---- cases ---------------------------------------------------------------------------------------

const loraCases = [
  { name: 'lora_basic', x: [2, 5, 16], out: 12, r: 4, bias: true, scale: 2 },
  { name: 'lora_rank1', x: [3, 16], out: 8, r: 1, bias: false, scale: 16 },
  { name: 'lora_r_gt_in', x: [2, 4, 3], out: 5, r: 8, bias: true, scale: 0.5 },
  { name: 'lora_single_token', x: [1, 1, 16], out: 16, r: 2, bias: false, scale: 1 },
  { name: 'lora_bf16', x: [2, 3, 32], out: 24, r: 4, bias: true, scale: 2, dtype: 'bfloat16' as const },
].map((c) => {
  const inFeatures = c.x[c.x.length - 1]!;
  const inputs: Record<string, Tensor> = {
    x: rnd(c.x),
    W: rnd([c.out, inFeatures]),
    A: rnd([c.r, inFeatures]),
    B: rnd([c.out, c.r]),
    upstream: rnd([...c.x.slice(0, -1), c.out]),
  };
  if (c.bias) inputs.bias = rnd([c.out]);
  return { ...c, inputs };
});

const divergenceCases = (['symmetric', 'forward', 'reverse'] as const).flatMap((kind) =>
  (['mean', 'sum'] as const).map((reduction) => ({
    name: `div_${kind}_${reduction}`,
    kind,
    reduction,
    temperature: 1,
    cur: rnd([3, 6, 97]),
    ref: rnd([3, 6, 97]),
    // sample 1 is all padding; sample 2 has one real token
    mask: mask([1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0], [3, 6]),
  })),
);
divergenceCases.push({
  name: 'div_temperature_big_vocab',
  kind: 'symmetric',
  reduction: 'mean',
  temperature: 2,
  cur: rnd([2, 20, 5000]),
  ref: rnd([2, 20, 5000]),
  mask: mask(Array.from({ length: 40 }, (_, i) => (i % 20 < 15 ? 1 : 0)), [2, 20]),
});
divergenceCases.push({
  name: 'div_single_token',
  kind: 'symmetric',
  reduction: 'sum',
  temperature: 1,
  cur: rnd([1, 1, 33]),
  ref: rnd([1, 1, 33]),
  mask: mask([1], [1, 1]),
});

const ceTargets = ids([3, 7, -100, 0, 96, 5, 5, -100, 1, 2, 3, 4], [2, 6]);
const ceCases = [
  { name: 'ce_mean', logits: rnd([2, 6, 97]), targets: ceTargets, reduction: 'mean' as const },
  { name: 'ce_sum_masked', logits: rnd([2, 6, 97]), targets: ceTargets, reduction: 'sum' as const, mask: mask([0, 0, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1], [2, 6]) },
];

function pcgradCase(name: string, n: number, zeroAt?: number) {
  const grads = Array.from({ length: n }, (_, i) => [i === zeroAt ? zeros([10]) : rnd([10]), i === zeroAt ? zeros([3, 4]) : rnd([3, 4])]);
  return { name, n, grads, orders: pcgradOrders(n, 7 + n) };
}
const pcgradCases = [pcgradCase('pcgrad_3', 3), pcgradCase('pcgrad_4', 4), pcgradCase('pcgrad_zero', 4, 1), pcgradCase('pcgrad_1', 1)];

const gpmCases = [
  { name: 'gpm_new', activations: matmul(rnd([40, 5]), rnd([5, 12])), grad: rnd([7, 12]), threshold: 0.97 },
  { name: 'gpm_grow', activations: rnd([30, 12]), grad: rnd([7, 12]), threshold: 0.9, basis: gpmBasis(matmul(rnd([20, 3]), rnd([3, 12])), { threshold: 0.99 }) },
];

const mixtureCases = [
  { name: 'mix_3d', x: rnd([3, 4, 16]), P: 6, out: 12, r: 2, indices: ids([0, 5, 2, 2, 5, 1], [3, 2]) }, // a task repeated, one shared
  { name: 'mix_2d', x: rnd([4, 16]), P: 5, out: 8, r: 3, indices: ids([4, 0, 1, 1, 2, 3, 0, 4], [4, 2]) },
  { name: 'mix_k1', x: rnd([2, 3, 8]), P: 3, out: 8, r: 8, indices: ids([2, 0], [2, 1]) },
].map((c) => {
  const k = c.indices.shape[1]!;
  const inFeatures = c.x.shape[c.x.shape.length - 1]!;
  const weights = tensor(Float32Array.from({ length: c.x.shape[0]! * k }, (_, i) => 0.2 + 0.15 * i), [c.x.shape[0]!, k]);
  return { ...c, A: rnd([c.P, c.r, inFeatures]), B: rnd([c.P, c.out, c.r]), weights, upstream: rnd([...c.x.shape.slice(0, -1), c.out]) };
});

let ref: Record<string, RefTensor> = {};
beforeAll(() => {
  const cases: Case[] = [
    ...loraCases.map((c) => ({ op: 'lora', name: c.name, dtype: c.dtype, inputs: c.inputs, params: { scale: c.scale } })),
    ...divergenceCases.map((c) => ({
      op: 'divergence',
      name: c.name,
      inputs: { cur: c.cur, ref: c.ref, mask: c.mask },
      params: { kind: c.kind, reduction: c.reduction, temperature: c.temperature },
    })),
    ...ceCases.map((c) => ({
      op: 'cross_entropy',
      name: c.name,
      inputs: { logits: c.logits, targets: c.targets, ...(c.mask ? { mask: c.mask } : {}) },
      params: { reduction: c.reduction },
    })),
    ...pcgradCases.map((c) => ({
      op: 'pcgrad',
      name: c.name,
      inputs: Object.fromEntries(c.grads.flatMap((g, i) => g.map((t, k) => [`g${i}.${k}`, t]))),
      params: { n: c.n, params: 2, orders: c.orders },
    })),
    ...gpmCases.map((c) => ({
      op: 'gpm',
      name: c.name,
      inputs: { activations: c.activations, grad: c.grad, ...(c.basis ? { basis: c.basis } : {}) },
      params: { threshold: c.threshold },
    })),
    ...mixtureCases.map((c) => ({
      op: 'mixture',
      name: c.name,
      inputs: { x: c.x, A: c.A, B: c.B, indices: c.indices, weights: c.weights, upstream: c.upstream },
    })),
  ];
  ref = runReference(cases);
});

// ---- parity -------------------------------------------------------------------------------------

describe('LoRA linear matches PEFT', () => {
  for (const c of loraCases) {
    it(`${c.name}: output and gradients of x, A, B`, () => {
      const cast = (t: Tensor) => (c.dtype ? t.to(c.dtype) : t);
      const x = cast(c.inputs.x!).setRequiresGrad();
      const A = cast(c.inputs.A!).setRequiresGrad();
      const B = cast(c.inputs.B!).setRequiresGrad();
      const y = loraLinear(x, cast(c.inputs.W!), A, B, { scale: c.scale, bias: c.inputs.bias && cast(c.inputs.bias) });
      y.backward(cast(c.inputs.upstream!));
      const tol = c.dtype ? BF16 : F32;
      expectClose(y, ref[`${c.name}.y`], tol, 'y');
      expectClose(x.grad, ref[`${c.name}.grad.x`], tol, 'grad x');
      expectClose(A.grad, ref[`${c.name}.grad.A`], tol, 'grad A');
      expectClose(B.grad, ref[`${c.name}.grad.B`], tol, 'grad B');
    });
  }
});

describe('flashback divergence matches F.kl_div', () => {
  for (const c of divergenceCases) {
    it(`${c.name}: loss and gradient of the current logits`, () => {
      const cur = c.cur.detach().setRequiresGrad();
      const loss = flashbackDivergence(cur, c.ref, c.mask, { kind: c.kind, reduction: c.reduction, temperature: c.temperature });
      expect(loss.shape).toEqual([]);
      loss.backward();
      expectScalar(loss, ref[`${c.name}.loss`], F32);
      expectClose(cur.grad, ref[`${c.name}.grad.cur`], F32, 'grad');
    });
  }

  it('bfloat16 logits: loss within bf16 precision, gradient in bf16', () => {
    const c = divergenceCases[0]!;
    const cur = c.cur.to('bfloat16').setRequiresGrad();
    const loss = flashbackDivergence(cur, c.ref.to('bfloat16'), c.mask);
    loss.backward();
    expect(cur.grad!.dtype).toBe('bfloat16');
    const ours = (loss.to('float32').toTypedArray() as Float32Array)[0]!;
    expect(Math.abs(ours - ref[`${c.name}.loss`]!.data[0]!)).toBeLessThan(BF16 * ref[`${c.name}.loss`]!.data[0]!);
  });

  it('is zero with zero gradient for identical distributions and for an all-padding mask', () => {
    const cur = rnd([2, 3, 11]).setRequiresGrad();
    const same = flashbackDivergence(cur, cur.detach(), mask([1, 1, 1, 1, 1, 1], [2, 3]));
    expect(Math.abs((same.toTypedArray() as Float32Array)[0]!)).toBeLessThan(1e-6);
    const none = flashbackDivergence(cur, rnd([2, 3, 11]), mask([0, 0, 0, 0, 0, 0], [2, 3]));
    none.backward();
    expect((none.toTypedArray() as Float32Array)[0]).toBe(0);
    expect(Math.max(...Array.from(cur.grad!.toTypedArray() as Float32Array, Math.abs))).toBe(0);
  });
});

describe('token cross-entropy matches F.cross_entropy', () => {
  for (const c of ceCases) {
    it(`${c.name}: loss and gradient`, () => {
      const logits = c.logits.detach().setRequiresGrad();
      const loss = tokenCrossEntropy(logits, c.targets, { reduction: c.reduction, mask: c.mask });
      loss.backward();
      expectScalar(loss, ref[`${c.name}.loss`], F32);
      expectClose(logits.grad, ref[`${c.name}.grad.logits`], F32, 'grad');
    });
  }
});

describe('PCGrad matches the reference loop', () => {
  for (const c of pcgradCases) {
    it(`${c.name}: projected mean gradient and conflict count`, () => {
      const r = pcgrad(c.grads, { orders: c.orders });
      expect(r.conflicts).toBe(ref[`${c.name}.conflicts`]!.data[0]);
      expectClose(r.grads[0]!, ref[`${c.name}.out.0`], F32, 'param 0');
      expectClose(r.grads[1]!, ref[`${c.name}.out.1`], F32, 'param 1');
      expect(r.gram.length).toBe(c.n * c.n);
    });
  }

  it('the seeded orders are permutations of the others, reproducible, and used when no orders are given', () => {
    const orders = pcgradOrders(5, 3);
    orders.forEach((o, i) => expect([...o].sort()).toEqual([0, 1, 2, 3, 4].filter((j) => j !== i)));
    expect(pcgradOrders(5, 3)).toEqual(orders);
    const c = pcgradCases[1]!;
    const bySeed = pcgrad(c.grads, { seed: 11 });
    const byOrders = pcgrad(c.grads, { orders: pcgradOrders(4, 11) });
    expect(bySeed.grads[0]!.toTypedArray()).toEqual(byOrders.grads[0]!.toTypedArray());
  });

  it('leaves non-conflicting gradients as their plain mean', () => {
    const g = rnd([64]);
    const r = pcgrad([[g], [g]]);
    expect(r.conflicts).toBe(0);
    expectClose(r.grads[0]!, { shape: [64], data: g.toTypedArray() as Float32Array }, F32, 'mean');
  });
});

describe('GPM matches the reference SVD update', () => {
  for (const c of gpmCases) {
    it(`${c.name}: same subspace (projector) and projected gradient`, () => {
      const basis = gpmBasis(c.activations, { threshold: c.threshold, basis: c.basis });
      expect(basis.shape[1]).toBe(ref[`${c.name}.k`]!.data[0]);
      // Singular vectors are defined up to sign: compare M M^T, which is not.
      const transposed = tensor(transpose(basis), [basis.shape[1]!, basis.shape[0]!]);
      expectClose(matmul(basis, transposed), ref[`${c.name}.projector`], 1e-4, 'projector');
      expectClose(gpmProject(c.grad, basis), ref[`${c.name}.projected`], 1e-4, 'projected');
    });
  }
});

function expectScalar(t: Tensor, expected: RefTensor | undefined, rtol: number): void {
  expect(t.shape).toEqual([]);
  const want = expected!.data[0]!;
  const got = (t.toTypedArray() as Float32Array)[0]!;
  expect(Math.abs(got - want), `loss ${got} vs ${want}`).toBeLessThanOrEqual(rtol * Math.abs(want) + 1e-7);
}

function transpose(t: Tensor): Float32Array {
  const [rows, cols] = t.shape as [number, number];
  const a = t.toTypedArray() as Float32Array;
  const out = new Float32Array(a.length);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) out[j * rows + i] = a[i * cols + j]!;
  return out;
}

describe('latent mixture matches the einsum reference', () => {
  for (const c of mixtureCases) {
    it(`${c.name}: output and gradients of x, A, B`, () => {
      const x = c.x.detach().setRequiresGrad();
      const A = c.A.detach().setRequiresGrad();
      const B = c.B.detach().setRequiresGrad();
      const y = latentMixture(x, A, B, c.indices, c.weights);
      y.backward(c.upstream);
      expectClose(y, ref[`${c.name}.y`], F32, 'y');
      expectClose(x.grad, ref[`${c.name}.grad.x`], F32, 'grad x');
      expectClose(A.grad, ref[`${c.name}.grad.A`], F32, 'grad A');
      expectClose(B.grad, ref[`${c.name}.grad.B`], F32, 'grad B');
    });
  }
});

// ---- LoRA helpers --------------------------------------------------------------------------------

describe('LoRA init, scale, merge and dropout', () => {
  it('scale is alpha / r, or alpha / sqrt(r) with rsLoRA', () => {
    expect(loraScale(16, 8)).toBe(2);
    expect(loraScale(16, 4, { rslora: true })).toBe(8);
  });

  it('kaiming init: A within 1/sqrt(in), B zero, seeded', () => {
    const A = zeros([8, 64]);
    const B = randn([32, 8]);
    loraInit(A, B, { seed: 1 });
    const a = A.toTypedArray() as Float32Array;
    expect(Math.max(...Array.from(a, Math.abs))).toBeLessThanOrEqual(1 / 8);
    expect(Math.max(...Array.from(a, Math.abs))).toBeGreaterThan(0.1);
    expect(Array.from(B.toTypedArray() as Float32Array).every((v) => v === 0)).toBe(true);
    const A2 = zeros([8, 64]);
    loraInit(A2, zeros([32, 8]), { seed: 1 });
    expect(A2.toTypedArray()).toEqual(A.toTypedArray());
    loraInit(A2, zeros([32, 8]), { init: 'gaussian', seed: 2 });
    const g = A2.toTypedArray() as Float32Array;
    const std = Math.sqrt(g.reduce((s, v) => s + v * v, 0) / g.length);
    expect(std).toBeGreaterThan(0.1);
    expect(std).toBeLessThan(0.15); // 1/r = 0.125
  });

  it('merged weights give the adapter output; unmerge restores W', () => {
    const x = rnd([5, 16]);
    const W = rnd([12, 16]);
    const A = rnd([4, 16]);
    const B = rnd([12, 4]);
    const y = loraLinear(x, W, A, B, { scale: 2 });
    const original = W.toTypedArray();
    loraMerge(W, A, B, 2);
    expectClose(loraLinear(x, W, A, zeros([12, 4]), { scale: 2 }), { shape: y.shape, data: y.toTypedArray() as Float32Array }, F32, 'merged');
    loraUnmerge(W, A, B, 2);
    expectClose(W, { shape: [12, 16], data: original as Float32Array }, F32, 'unmerged');
  });

  it('dropout: seeded, keeps the expectation, and drops the same entries in backward', () => {
    const x = tensor(new Float32Array(4000).fill(1), [1000, 4]).setRequiresGrad();
    const W = zeros([1, 4]);
    const A = tensor([1, 1, 1, 1], [1, 4]).setRequiresGrad();
    const B = tensor([1], [1, 1]);
    const y1 = loraLinear(x, W, A, B, { dropout: 0.25, seed: 3 });
    const y2 = loraLinear(x, W, A, B, { dropout: 0.25, seed: 3 });
    expect(y1.toTypedArray()).toEqual(y2.toTypedArray());
    const mean = (y1.toTypedArray() as Float32Array).reduce((s, v) => s + v, 0) / 1000;
    expect(Math.abs(mean - 4)).toBeLessThan(0.2);
    y1.sum().backward();
    // d y / d x = W + mask * (B A): each entry is either 0 (dropped) or 1 / (1 - p).
    const gx = new Set(Array.from(x.grad!.toTypedArray() as Float32Array, (v) => v.toFixed(4)));
    expect([...gx].sort()).toEqual(['0.0000', '1.3333']);
  });
});

// ---- bad inputs ----------------------------------------------------------------------------------

describe('kernels reject bad input with clear errors', () => {
  it('LoRA: mismatched shapes between W, A, B and x', () => {
    const x = rnd([2, 16]);
    expectError(() => loraLinear(x, rnd([8, 15]), rnd([4, 16]), rnd([8, 4])), RangeError, 'loraLinear: x has 16 features but W [8, 15] expects 15');
    expectError(() => loraLinear(x, rnd([8, 16]), rnd([4, 15]), rnd([8, 4])), RangeError, 'loraLinear: A [4, 15] must be (r, 16) to match W [8, 16]');
    expectError(() => loraLinear(x, rnd([8, 16]), rnd([4, 16]), rnd([8, 3])), RangeError, 'loraLinear: B [8, 3] must be (8, 4)');
    expectError(() => loraLinear(x, rnd([8, 16]), rnd([4, 16]), rnd([8, 4]), { bias: rnd([7]) }), RangeError, 'loraLinear: bias [7] must be (8)');
    expectError(() => loraLinear(x, rnd([8, 16]), rnd([4, 16]), rnd([8, 4]), { dropout: 1 }), RangeError, 'loraLinear: dropout must be in [0, 1)');
    expectError(() => loraLinear(x.to('bfloat16'), rnd([8, 16]), rnd([4, 16]), rnd([8, 4])), TypeError, 'loraLinear: W is float32 but x is bfloat16');
  });

  it('divergence: logits of different vocab sizes, a mask of the wrong length, NaN in logits', () => {
    const m = mask([1, 1, 1], [1, 3]);
    expectError(() => flashbackDivergence(rnd([1, 3, 10]), rnd([1, 3, 11]), m), RangeError, 'flashbackDivergence: vocabulary sizes differ: cur has 10, ref has 11');
    expectError(() => flashbackDivergence(rnd([1, 3, 10]), rnd([1, 3, 10]), mask([1, 1], [1, 2])), RangeError, 'flashbackDivergence: mask has shape [1, 2] but the logits [1, 3, 10] need [1, 3]');
    const nan = tensor(Float32Array.from({ length: 30 }, (_, i) => (i === 7 ? Number.NaN : i)), [1, 3, 10]);
    expectError(() => flashbackDivergence(nan, rnd([1, 3, 10]), m), RangeError, 'flashbackDivergence: the current logits contains NaN or infinity');
    expectError(() => flashbackDivergence(rnd([1, 3, 10]), nan, m), RangeError, 'flashbackDivergence: the reference logits contains NaN or infinity');
    expectError(() => flashbackDivergence(rnd([1, 3, 10]), rnd([1, 3, 10]), m, { kind: 'js' as never }), TypeError, "flashbackDivergence: kind must be one of 'symmetric', 'forward', 'reverse', got string 'js'");
    expectError(() => flashbackDivergence(rnd([1, 3, 10]), rnd([1, 3, 10]), m, { temperature: 0 }), RangeError, 'flashbackDivergence: temperature must be a positive number');
  });

  it('cross-entropy: targets outside the vocabulary or of the wrong type', () => {
    expectError(() => tokenCrossEntropy(rnd([1, 3, 10]), ids([1, 10, 2], [1, 3])), RangeError, 'tokenCrossEntropy: target 10 at position 1 is outside the vocabulary of 10');
    expectError(() => tokenCrossEntropy(rnd([1, 3, 10]), rnd([1, 3])), TypeError, 'tokenCrossEntropy: targets must be int64 or int32 token ids, got float32');
  });

  it('PCGrad: an empty gradient list, mismatched parameter lists, bad orders', () => {
    expectError(() => pcgrad([]), RangeError, 'pcgrad: the list of gradients is empty');
    expectError(() => pcgrad([[rnd([3])], [rnd([4])]]), RangeError, 'pcgrad: gradient 1 tensor 0 has shape [4] but gradient 0\'s has [3]');
    expectError(() => pcgrad([[rnd([3])], [rnd([3]), rnd([3])]]), RangeError, 'pcgrad: gradient 1 has 2 tensors but gradient 0 has 1');
    expectError(() => pcgrad([[rnd([3])], [rnd([3])]], { orders: [[1], [1]] }), RangeError, 'pcgrad: order 1 must visit every other gradient exactly once');
    expectError(() => pcgrad([[rnd([3])], [3 as never]]), TypeError, 'pcgrad: grads[1][0] must be a Tensor, got number 3');
  });

  it('latent mixture: out-of-range pool indices and mismatched shapes', () => {
    const x = rnd([2, 3, 8]);
    const A = rnd([4, 2, 8]);
    const B = rnd([4, 6, 2]);
    const w = tensor([0.5, 0.5, 0.5, 0.5], [2, 2]);
    expectError(() => latentMixture(x, A, B, ids([0, 1, 4, 2], [2, 2]), w), RangeError, 'latentMixture: index 4 (sample 1, slot 0) is outside the pool of 4 latent tasks');
    expectError(() => latentMixture(x, A, B, ids([0, -1, 3, 2], [2, 2]), w), RangeError, 'latentMixture: index -1 (sample 0, slot 1)');
    expectError(() => latentMixture(x, A, rnd([4, 6, 3]), ids([0, 1, 2, 3], [2, 2]), w), RangeError, 'latentMixture: B [4, 6, 3] must be (4, out, 2)');
    expectError(() => latentMixture(x, A, B, ids([0, 1, 2], [1, 3]), tensor([1, 1, 1], [1, 3])), RangeError, 'must both be (2, k)');
  });

  it('GPM: bad threshold and mismatched basis', () => {
    expectError(() => gpmBasis(rnd([5, 4]), { threshold: 1.5 }), RangeError, 'gpmBasis: threshold must be in (0, 1]');
    expectError(() => gpmProject(rnd([3, 4]), rnd([5, 2])), RangeError, 'gpmProject: grad [3, 4] must end in 5 features');
  });
});

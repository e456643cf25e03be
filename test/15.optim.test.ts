// AdamW, gradient clipping and the cosine schedule against torch.optim.AdamW,
// torch.nn.utils.clip_grad_norm_ and transformers' get_cosine_schedule_with_warmup.
import { describe, expect, it } from 'vitest';

import { AdamW, clipGradNorm, cosineWithWarmup } from '../lib/optim.js';
import { randn, type Tensor, tensor } from '../lib/tensor.js';
import { expectError, python } from './helpers.js';
import { expectClose } from './reference.js';

const values = (t: Tensor) => Array.from(t.toTypedArray() as Float32Array);

describe('optimisation', () => {
  it('AdamW: 6 steps (one with a parameter lacking a gradient) equal torch.optim.AdamW', () => {
    const shapes = [[3, 4], [5]];
    const init = shapes.map((s, i) => randn(s, { seed: 10 + i }));
    const grads = Array.from({ length: 6 }, (_, step) => shapes.map((s, i) => randn(s, { seed: 100 + step * 10 + i })));
    const initValues = init.map(values); // detach() shares storage: read the start before training
    const params = init.map((p) => p.detach().setRequiresGrad());
    const opt = new AdamW(params, { lr: 0.05, betas: [0.8, 0.95], eps: 1e-6, weightDecay: 0.1 });
    grads.forEach((g, step) => {
      params.forEach((p, i) => {
        if (step === 3 && i === 1) return; // no gradient: torch skips the parameter
        p.backward(g[i]); // leaf backward sets .grad = g (accumulating onto nothing)
      });
      opt.step();
      opt.zeroGrad();
    });
    const ref = python<number[][]>(`
import json, torch
init = ${JSON.stringify(initValues)}
grads = ${JSON.stringify(grads.map((g) => g.map(values)))}
shapes = ${JSON.stringify(shapes)}
ps = [torch.tensor(v).reshape(s).requires_grad_(True) for v, s in zip(init, shapes)]
opt = torch.optim.AdamW(ps, lr=0.05, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)
for step, g in enumerate(grads):
    for i, p in enumerate(ps):
        p.grad = None if (step == 3 and i == 1) else torch.tensor(g[i]).reshape(shapes[i])
    opt.step()
print(json.dumps([p.detach().flatten().tolist() for p in ps]))`);
    params.forEach((p, i) => expectClose(p, { shape: p.shape, data: Float32Array.from(ref[i]!) }, 1e-5, `param ${i}`));
    expect(opt.stepCount).toBe(6);
  });

  it('clipGradNorm scales like clip_grad_norm_ and returns the norm before clipping', () => {
    const p = [tensor([0, 0, 0]).setRequiresGrad(), tensor([0, 0]).setRequiresGrad()];
    p[0]!.backward(tensor([3, 0, 0]));
    p[1]!.backward(tensor([0, 4]));
    expect(clipGradNorm(p, 10)).toBeCloseTo(5, 6); // under the limit: unchanged
    expect(values(p[0]!.grad!)).toEqual([3, 0, 0]);
    expect(clipGradNorm(p, 1)).toBeCloseTo(5, 6);
    expect(values(p[0]!.grad!).map((v) => Number(v.toFixed(5)))).toEqual([0.6, 0, 0]);
    expect(values(p[1]!.grad!).map((v) => Number(v.toFixed(5)))).toEqual([0, 0.8]);
    expectError(() => clipGradNorm(p, 0), RangeError, 'clipGradNorm: maxNorm must be > 0');
  });

  it('cosine schedule with warm-up equals transformers', () => {
    const ref = python<number[]>(`
import json, torch
from transformers import get_cosine_schedule_with_warmup
opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
s = get_cosine_schedule_with_warmup(opt, num_warmup_steps=3, num_training_steps=20)
out = []
for _ in range(22):
    out.append(s.get_last_lr()[0]); opt.step(); s.step()
print(json.dumps(out))`);
    ref.forEach((v, step) => expect(cosineWithWarmup(step, 3, 20)).toBeCloseTo(v, 12));
  });

  it('AdamW refuses parameters it cannot train, and a disposed state', () => {
    const p = randn([2]).setRequiresGrad();
    expectError(() => new AdamW([randn([2])]), RangeError, 'Optimizer: params[0] must be a trainable leaf (requires gradients)');
    expectError(() => new AdamW([p, p]), RangeError, 'Optimizer: params[1] is params[0] again');
    expectError(() => new AdamW([p], { betas: [1, 0.999] }), RangeError, 'Optimizer: need lr >= 0, betas in [0, 1), eps > 0, weightDecay >= 0');
    const opt = new AdamW([p]);
    opt.dispose();
    expectError(() => opt.step(), TypeError, 'optimizer.step: the optimizer is disposed');
  });
});

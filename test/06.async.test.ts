// The async entry points: a Promise, the event loop stays free, errors reject, inputs stay alive.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { trainStep } from '../lib/jfa/step.js';
import { LlamaModel } from '../lib/model/llama.js';
import { AdamW } from '../lib/optim.js';
import { matmul, matmulAsync, randn, tensor, zeros } from '../lib/tensor.js';

describe('matmulAsync', () => {
  it('gives the same result as matmul', async () => {
    const a = randn([64, 32], { seed: 1 });
    const b = randn([32, 16], { seed: 2 });
    const p = matmulAsync(a, b);
    expect(p).toBeInstanceOf(Promise);
    expect((await p).toTypedArray()).toEqual(matmul(a, b).toTypedArray());
  });

  it('keeps the event loop ticking while it computes', async () => {
    const n = 1536;
    const a = randn([n, n], { seed: 3 });
    const b = randn([n, n], { seed: 4 });
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    const started = performance.now();
    const results = await Promise.all([matmulAsync(a, b), matmulAsync(b, a), matmulAsync(a, a)]);
    const ms = performance.now() - started;
    clearInterval(timer);
    results.forEach((r) => r.dispose());
    console.log(`async: 3 matmuls of ${n}x${n} took ${ms.toFixed(0)} ms; the event loop ticked ${ticks} times`);
    // A blocking call would allow no ticks at all; the work takes tens of milliseconds.
    expect(ms).toBeGreaterThan(20);
    expect(ticks).toBeGreaterThan(5);
  });

  it('rejects with the same error class and message as the sync op', async () => {
    await expect(matmulAsync(randn([2, 3]), randn([2, 3]))).rejects.toThrow(RangeError);
    await expect(matmulAsync(randn([2, 3]), randn([2, 3]))).rejects.toThrow('matmul: shapes [2, 3] and [2, 3] cannot be multiplied');
    await expect(matmulAsync(tensor(new Int32Array(1), [1, 1]), randn([1, 1]))).rejects.toThrow(TypeError);
  });

  it('rejects arguments that are not tensors', async () => {
    await expect(matmulAsync(1 as never, randn([1, 1]))).rejects.toThrow('matmulAsync: a must be a Tensor, got number 1');
  });

  it('inputs disposed while the work runs do not break it', async () => {
    const a = randn([512, 512], { seed: 5 });
    const b = randn([512, 512], { seed: 6 });
    const expected = matmul(a, b).toTypedArray();
    const p = matmulAsync(a, b);
    a.dispose();
    b.dispose();
    expect((await p).toTypedArray()).toEqual(expected);
  });
});

describe('model load, forward and training step off the main thread', () => {
  const config = { vocab_size: 32, hidden_size: 16, intermediate_size: 32, num_hidden_layers: 2, num_attention_heads: 2, num_key_value_heads: 2 };
  const ids = () => tensor(new BigInt64Array(Array.from({ length: 12 }, (_, i) => BigInt(1 + (i % 30)))), [2, 6]);

  it('loadAsync and logitsAsync give what load and logits give', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'jfa-async-'));
    try {
      const m = LlamaModel.random(config, { seed: 2 });
      m.save(dir, { 'config.json': JSON.stringify({ architectures: ['LlamaForCausalLM'], model_type: 'llama', ...config }) });
      const p = LlamaModel.loadAsync(dir);
      expect(p).toBeInstanceOf(Promise);
      const loaded = await p;
      const x = ids();
      const sync = LlamaModel.load(dir).logits(x).toTypedArray();
      const out = await loaded.logitsAsync(x);
      expect(out.toTypedArray()).toEqual(sync);
      expect(out.requiresGrad).toBe(false);
      await expect(LlamaModel.loadAsync(join(dir, 'missing'))).rejects.toThrow(`${join(dir, 'missing')}: not a`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('while a step runs, the model refuses forwards and changes, and the optimizer a second step', async () => {
    const model = LlamaModel.random(config, { seed: 3 });
    model.addLora({ r: 2, seed: 1 });
    const params = Object.values(model.loraParameters());
    const optimizer = new AdamW(params, { lr: 0.01 });
    const x = ids();
    const targets = tensor(new BigInt64Array(12).fill(5n), [2, 6]);
    const micro = [{ kind: 'new' as const, ids: x, attentionMask: tensor(new Uint8Array(12).fill(1), [2, 6]), targets }];
    const running = trainStep(model, optimizer, micro, { method: 'sft' });
    expect(() => model.logits(x)).toThrow('model.logits: the model is training; await the step first');
    expect(() => model.setLatentPool(0, zeros([2, 2, 16]), zeros([2, 16, 2]))).toThrow('setLatentPool: the model is training');
    await expect(model.generate(x)).rejects.toThrow('generate: the model is training');
    await expect(trainStep(model, optimizer, micro, { method: 'sft' })).rejects.toThrow('trainStep: a training step is running on this optimizer; await it first');
    const r = await running;
    expect(r.sft).toBeGreaterThan(0);
    expect(model.logits(x).shape).toEqual([2, 6, 32]); // free again
    // and a step is refused while a generation reads the model
    const gen = model.generate(x, { maxNewTokens: 2 });
    await expect(trainStep(model, optimizer, micro, { method: 'sft' })).rejects.toThrow('trainStep: the model is generating');
    await gen;
    await expect(trainStep(model, optimizer, [{ ...micro[0]!, targets: undefined }], { method: 'sft' })).rejects.toThrow('trainStep: batch 0 (new-task) needs targets');
    expect(params.every((p) => p.grad === null)).toBe(true); // a failed step leaves no gradients behind
    optimizer.dispose();
  });
});

// The async entry point: a Promise, the event loop stays free, errors reject, inputs stay alive.
import { describe, expect, it } from 'vitest';

import { matmul, matmulAsync, randn, tensor } from '../lib/tensor.js';

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

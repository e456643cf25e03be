// Ownership: dispose, Symbol.dispose, scopes, GC finalizers, and RSS over many iterations.
import { describe, expect, it } from 'vitest';

import { emptyCpuCache, memoryStats, setCpuCacheLimit } from '../lib/runtime.js';
import { add, keep, matmul, randn, scope, scopeAsync, type Tensor, zeros } from '../lib/tensor.js';
import { node } from './helpers.js';

describe('disposal', () => {
  it('dispose() frees the native memory now', () => {
    const before = memoryStats();
    const t = zeros([256, 256]);
    const during = memoryStats();
    expect(during.liveTensors).toBe(before.liveTensors + 1);
    expect(during.liveBytes).toBe(before.liveBytes + 256 * 256 * 4);
    expect(during.cpuAllocatedBytes).toBe(before.cpuAllocatedBytes + 256 * 256 * 4);
    t.dispose();
    const after = memoryStats();
    expect(after.liveTensors).toBe(before.liveTensors);
    expect(after.liveBytes).toBe(before.liveBytes);
    expect(after.cpuAllocatedBytes).toBe(before.cpuAllocatedBytes);
  });

  it('the CPU allocator reuses freed blocks, respects its cap and empties on request', () => {
    emptyCpuCache();
    const size = [1000, 1000]; // 4,000,000 bytes -> the 4,194,304-byte class
    zeros(size).dispose();
    const cached = memoryStats();
    expect(cached.cpuCachedBytes).toBe(4_194_304);
    const t = zeros(size);
    const reused = memoryStats();
    expect(reused.cpuCacheHits).toBe(cached.cpuCacheHits + 1);
    expect(reused.cpuCachedBytes).toBe(0);
    setCpuCacheLimit(1_000_000);
    t.dispose(); // over the cap: goes back to the system
    expect(memoryStats().cpuCachedBytes).toBe(0);
    setCpuCacheLimit(cached.cpuCacheLimitBytes);
    zeros(size).dispose();
    expect(memoryStats().cpuCachedBytes).toBe(4_194_304);
    emptyCpuCache();
    expect(memoryStats().cpuCachedBytes).toBe(0);
    expect(() => setCpuCacheLimit(-1)).toThrow('setCpuCacheLimit: bytes must be a non-negative integer, got number -1');
  });

  it('Symbol.dispose frees like dispose()', () => {
    const before = memoryStats().liveTensors;
    const t = zeros([4]);
    t[Symbol.dispose]();
    expect(t.disposed).toBe(true);
    expect(memoryStats().liveTensors).toBe(before);
  });

  it('scope() frees what was made inside and keeps what it returns', () => {
    const before = memoryStats().liveTensors;
    let inner: Tensor | undefined;
    const kept = scope(() => {
      inner = randn([8, 8]);
      const a = randn([8, 8]);
      return matmul(inner, a);
    });
    expect(inner!.disposed).toBe(true);
    expect(kept.disposed).toBe(false);
    expect(memoryStats().liveTensors).toBe(before + 1);
    kept.dispose();
    expect(memoryStats().liveTensors).toBe(before);
  });

  it('nested scopes hand returned tensors to the outer scope; keep() opts out', () => {
    const before = memoryStats().liveTensors;
    let survivor: Tensor | undefined;
    let fromInner: Tensor | undefined;
    scope(() => {
      fromInner = scope(() => ({ x: zeros([2]), y: 3 })).x;
      survivor = keep(zeros([3]));
      expect(fromInner.disposed).toBe(false);
    });
    expect(fromInner!.disposed).toBe(true);
    expect(survivor!.disposed).toBe(false);
    survivor!.dispose();
    expect(memoryStats().liveTensors).toBe(before);
  });

  it('scope() frees everything when fn throws, and rejects async functions', () => {
    const before = memoryStats().liveTensors;
    expect(() =>
      scope(() => {
        zeros([2]);
        throw new Error('boom');
      }),
    ).toThrow('boom');
    expect(() => scope(async () => zeros([2]))).toThrow('scope: fn returned a Promise; use scopeAsync');
    expect(memoryStats().liveTensors).toBe(before);
  });

  it('scopeAsync() tracks tensors across awaits', async () => {
    const before = memoryStats().liveTensors;
    const out = await scopeAsync(async () => {
      const a = randn([4, 4]);
      await new Promise((r) => setTimeout(r, 5));
      const b = randn([4, 4]);
      return add(a, b);
    });
    expect(memoryStats().liveTensors).toBe(before + 1);
    out.dispose();
    expect(memoryStats().liveTensors).toBe(before);
  });

  it('the garbage collector frees tensors that were never disposed', () => {
    const r = node(
      `import { zeros, memoryStats } from './dist/index.js';
       const base = memoryStats().liveTensors;
       (() => { for (let i = 0; i < 2000; i++) zeros([1024]); })();
       const made = memoryStats().liveTensors - base;
       for (let i = 0; i < 20 && memoryStats().liveTensors > base + 100; i++) {
         globalThis.gc(); await new Promise((r) => setImmediate(r));
       }
       console.log(JSON.stringify({ made, left: memoryStats().liveTensors - base }));`,
      {},
      ['--expose-gc'],
    );
    expect(r.stderr).toBe('');
    const { made, left } = JSON.parse(r.stdout) as { made: number; left: number };
    expect(made).toBe(2000);
    expect(left).toBeLessThan(100);
  });

  it('10,000 create-use-dispose iterations keep RSS within a few MiB', () => {
    // In a fresh process with gc() around each window, so that JS garbage still awaiting collection
    // (the typed arrays made each iteration) does not count: what is measured is what stays.
    // Before each reading: gc(), then a pause for V8's concurrent sweeper to free the typed arrays'
    // backing stores (without it, 20-25 MiB of them were sometimes still held), gc() again, and
    // emptyCpuCache(), which hands malloc's free heap memory back. RSS then counts what is in use.
    // Three windows of 10,000: a leak grows RSS in every one.
    const r = node(
      `import { add, emptyCpuCache, matmul, randn, tensor, memoryStats } from './dist/index.js';
       const step = () => {
         const a = tensor(new Float32Array(4096), [64, 64]);
         const b = randn([64, 64]);
         const c = matmul(a, b);
         const d = add(c, b);
         d.toTypedArray();
         for (const t of [a, b, c, d]) t.dispose();
       };
       // Warm-up: allocator arenas, the JIT and V8's heap reach their steady size within ~5,000 steps.
       for (let i = 0; i < 5000; i++) step();
       const settle = async () => {
         globalThis.gc();
         await new Promise((r) => setTimeout(r, 100));
         globalThis.gc();
         emptyCpuCache();
       };
       const growth = [];
       for (let w = 0; w < 3; w++) {
         await settle();
         const before = process.memoryUsage().rss;
         for (let i = 0; i < 10000; i++) step();
         await settle();
         growth.push(process.memoryUsage().rss - before);
       }
       console.log(JSON.stringify({ growth, rss: process.memoryUsage().rss, live: memoryStats().liveTensors }));`,
      {},
      ['--expose-gc'],
    );
    expect(r.stderr).toBe('');
    const m = JSON.parse(r.stdout) as { growth: number[]; rss: number; live: number };
    const mib = (x: number) => (x / 2 ** 20).toFixed(2);
    console.log(`memory: RSS growth per 10,000 iterations ${m.growth.map(mib).join(', ')} MiB (RSS ${mib(m.rss)} MiB at the end)`);
    expect(m.live).toBe(0);
    for (const g of m.growth) expect(g).toBeLessThan(4 * 2 ** 20);
  });
});

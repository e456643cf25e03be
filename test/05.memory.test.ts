// Ownership: dispose, Symbol.dispose, scopes, GC finalizers, and RSS over many iterations.
import { describe, expect, it } from 'vitest';

import { pcgrad } from '../lib/kernels.js';
import { saveSafetensors } from '../lib/model/safetensors.js';
import { emptyCpuCache, memoryStats, setCpuCacheLimit } from '../lib/runtime.js';
import { add, keep, matmul, matmulAsync, randn, scope, scopeAsync, type Tensor, tensor, zeros } from '../lib/tensor.js';
import { expectError, node } from './helpers.js';

describe('disposal', () => {
  it('dispose() frees the native memory now', () => {
    emptyCpuCache(); // a cached larger block would serve the tensor below (and count as allocated)
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

  it('a request takes a cached block up to twice its size class, and the block returns to its own class', () => {
    emptyCpuCache();
    zeros([1000, 1000]).dispose(); // the 4,194,304-byte class
    const cached = memoryStats();
    expect(cached.cpuCachedBytes).toBe(4_194_304);
    const smaller = zeros([800, 1000]); // 3,200,000 bytes: the 3,407,872-byte class, none cached
    const during = memoryStats();
    expect(during.cpuCacheHits).toBe(cached.cpuCacheHits + 1);
    expect(during.cpuCachedBytes).toBe(0);
    expect(during.cpuAllocatedBytes).toBe(cached.cpuAllocatedBytes + 4_194_304);
    smaller.dispose();
    expect(memoryStats().cpuCachedBytes).toBe(4_194_304);
    const quarter = zeros([400, 1000]); // 1,600,000 bytes: the block is more than twice its class
    const after = memoryStats();
    expect(after.cpuCacheMisses).toBe(cached.cpuCacheMisses + 1);
    expect(after.cpuCachedBytes).toBe(4_194_304);
    quarter.dispose();
    emptyCpuCache();
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

// A tensor reaches JS as an id (slot + generation * 2^24) in the addon's table; these check what
// the ids promise: a disposed tensor's id is refused everywhere, a reused slot never answers to an
// old id, and the GC frees what was never disposed, even when a slot was reused meanwhile.
describe('tensor ids', () => {
  it('a disposed tensor is refused by every reader, naming the op and the argument', async () => {
    const t = randn([2, 2]);
    const live = randn([2, 2]);
    t.dispose();
    expectError(() => add(live, t), TypeError, 'add: b is a disposed tensor');
    expectError(() => matmul(t, live), TypeError, 'matmul: a is a disposed tensor');
    expectError(() => pcgrad([[live], [t]]), TypeError, 'pcgrad: grads[1][0] is a disposed tensor');
    expectError(() => live.copyFrom(t), TypeError, 'copyInto: src is a disposed tensor');
    expectError(() => saveSafetensors('/nonexistent/x.safetensors', { w: t }), TypeError, "saveSafetensors: tensors['w'] is a disposed tensor");
    await expect(matmulAsync(live, t)).rejects.toThrow('matmulAsync: b is a disposed tensor');
    for (const [name, read] of [
      ['shape', () => t.shape],
      ['dtype', () => t.dtype],
      ['device', () => t.device],
      ['nbytes', () => t.nbytes],
      ['toTypedArray', () => t.toTypedArray()],
    ] as const)
      expectError(read, TypeError, `${name}: the tensor is disposed`);
    expect(t.disposed).toBe(true);
    live.dispose();
  });

  it('a reused slot gets a new id; the old id stays refused and disposing it again frees nothing', () => {
    const before = memoryStats();
    const old = zeros([3]);
    const oldId = old.handle;
    old.dispose();
    const reused = tensor([1, 2, 3]); // the freed slot is handed out again
    expect(reused.handle).not.toBe(oldId);
    expect((reused.handle - oldId) % 2 ** 24).toBe(0); // the same slot, a later generation
    expectError(() => add(old, reused), TypeError, 'add: a is a disposed tensor');
    old.dispose();
    expect(reused.disposed).toBe(false);
    expect(Array.from(reused.toTypedArray() as Float32Array)).toEqual([1, 2, 3]);
    expect(memoryStats().liveTensors).toBe(before.liveTensors + 1);
    reused.dispose();
    expect(memoryStats().liveTensors).toBe(before.liveTensors);
    expect(memoryStats().liveBytes).toBe(before.liveBytes);
  });

  it('live ids are distinct and each reads its own tensor, through rounds of frees and reuse', () => {
    const live = new Map<number, { t: Tensor; value: number }>();
    const stale: Tensor[] = [];
    let next = 0;
    for (let round = 0; round < 4; round++) {
      for (let i = 0; i < 300; i++) {
        const value = next++;
        const t = tensor([value]);
        expect(live.has(t.handle)).toBe(false);
        live.set(t.handle, { t, value });
      }
      let k = 0;
      for (const [id, { t }] of live)
        if (k++ % 3 !== round % 3) {
          t.dispose();
          live.delete(id);
          stale.push(t);
        }
    }
    for (const { t, value } of live.values()) expect((t.toTypedArray() as Float32Array)[0]).toBe(value);
    for (const t of stale) expect(t.disposed).toBe(true);
    for (const { t } of live.values()) t.dispose();
  });

  it('V8 is told the native bytes: undisposed tensors of 1 MiB make the GC run long before 400 pile up', () => {
    // Each iteration leaves ~200 bytes of JS garbage and 1 MiB of native memory: only the external
    // memory reported to V8 makes it collect within these 400 iterations.
    const r = node(
      `import { zeros, memoryStats } from './dist/index.js';
       let max = 0;
       for (let i = 0; i < 400; i++) {
         zeros([512, 512]);
         await new Promise((r) => setImmediate(r));
         max = Math.max(max, memoryStats().liveTensors);
       }
       console.log(JSON.stringify({ max }));`,
    );
    expect(r.stderr).toBe('');
    expect((JSON.parse(r.stdout) as { max: number }).max).toBeLessThan(200);
  });

  it('the GC frees undisposed tensors and their bytes; a late finalizer never frees the slot\'s next tensor', () => {
    const r = node(
      `import { zeros, memoryStats } from './dist/index.js';
       const base = memoryStats();
       const kept = [];
       for (let i = 0; i < 300; i++) {
         const dropped = zeros([256]);
         await null; // its registration with the GC runs here
         dropped.dispose();
         kept.push(zeros([4])); // takes dropped's slot
       }
       (() => { for (let i = 0; i < 300; i++) zeros([256]); })(); // never disposed
       const made = memoryStats().liveTensors - base.liveTensors;
       for (let i = 0; i < 20 && memoryStats().liveTensors > base.liveTensors + 300; i++) {
         globalThis.gc(); await new Promise((r) => setImmediate(r));
       }
       const after = memoryStats();
       console.log(JSON.stringify({ made, left: after.liveTensors - base.liveTensors, bytes: after.liveBytes - base.liveBytes,
         keptOk: kept.every((t) => !t.disposed && t.toTypedArray().length === 4) }));`,
      {},
      ['--expose-gc'],
    );
    expect(r.stderr).toBe('');
    const m = JSON.parse(r.stdout) as { made: number; left: number; bytes: number; keptOk: boolean };
    expect(m.made).toBe(600);
    expect(m.left).toBe(300);
    expect(m.bytes).toBe(300 * 16);
    expect(m.keptOk).toBe(true);
  });
});

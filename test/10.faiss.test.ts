// FAISS: flat search is exact (checked against a brute force in JS), HNSW finds most true
// neighbours, indexes survive save/load, k-means finds well-separated blobs, the async variants
// match the sync ones without blocking the event loop, vectors are read in place, and bad input
// gives clear errors.
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { Index, type IndexMetric, kmeans, kmeansAsync, type SearchResult } from '../lib/faiss.js';
import { native } from '../lib/native.js';
import { expectError } from './helpers.js';

/** Seeded standard normal samples (mulberry32, Box-Muller) as float32. */
function gaussian(count: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const uniform = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) out[i] = Math.sqrt(-2 * Math.log(1 - uniform())) * Math.cos(2 * Math.PI * uniform());
  return out;
}

interface Neighbour {
  id: number;
  distance: number;
}

/** The `keep` best stored vectors of each query, best first, in double precision. */
function bruteForce(base: Float32Array, queries: Float32Array, dim: number, keep: number, metric: IndexMetric): Neighbour[][] {
  const out: Neighbour[][] = [];
  for (let q = 0; q * dim < queries.length; q++) {
    const all: Neighbour[] = [];
    for (let i = 0; i * dim < base.length; i++) {
      let s = 0;
      for (let j = 0; j < dim; j++) {
        const a = queries[q * dim + j]!;
        const b = base[i * dim + j]!;
        s += metric === 'l2' ? (a - b) * (a - b) : a * b;
      }
      all.push({ id: i, distance: s });
    }
    all.sort((x, y) => (metric === 'l2' ? x.distance - y.distance : y.distance - x.distance));
    out.push(all.slice(0, keep));
  }
  return out;
}

/**
 * Exactly the brute force's neighbours: every distance agrees, and every label agrees unless float32
 * rounding could have swapped two neighbours (their true distances within `tie` of each other).
 */
function expectExact(result: SearchResult, truth: Neighbour[][], k: number, tie: number): void {
  let compared = 0;
  truth.forEach((best, q) => {
    for (let j = 0; j < k; j++) {
      const want = best[j]!;
      expect(result.distances[q * k + j]).toBeCloseTo(want.distance, 3);
      const near = (other?: Neighbour) => other !== undefined && Math.abs(other.distance - want.distance) < tie;
      if (near(best[j - 1]) || near(best[j + 1])) continue;
      expect(result.labels[q * k + j], `query ${q}, rank ${j}`).toBe(BigInt(want.id));
      compared++;
    }
  });
  expect(compared).toBeGreaterThan(0.9 * truth.length * k); // the tie rule must not excuse much
}

function recall(result: SearchResult, truth: Neighbour[][], k: number): number {
  let hits = 0;
  truth.forEach((best, q) => {
    const ids = new Set(best.slice(0, k).map((n) => BigInt(n.id)));
    for (let j = 0; j < k; j++) if (ids.has(result.labels[q * k + j]!)) hits++;
  });
  return hits / (truth.length * k);
}

/** A plain Error, not one of its TypeError/RangeError subclasses. */
function expectPlainError(fn: () => unknown, ...parts: string[]): void {
  expectError(fn, Error, ...parts);
  try {
    fn();
  } catch (e) {
    expect((e as Error).constructor).toBe(Error);
  }
}

const dir = mkdtempSync(join(tmpdir(), 'jfa-faiss-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('flat indexes', () => {
  const dim = 16;
  const base = gaussian(1000 * dim, 1);

  for (const kind of ['flat-l2', 'flat-ip'] as const) {
    // 50 queries take FAISS's BLAS path, 7 its direct loop.
    it.each([50, 7])(`${kind} gives the brute-force neighbours (%i queries)`, (nq) => {
      using index = Index.create({ kind, dim });
      index.add(base);
      expect([index.kind, index.metric, index.dim, index.ntotal]).toEqual([kind, kind.slice(5), dim, 1000]);
      const queries = gaussian(nq * dim, 2 + nq);
      const result = index.search(queries, 10);
      expect(result.distances).toBeInstanceOf(Float32Array);
      expect(result.labels).toBeInstanceOf(BigInt64Array);
      expect(result.labels.length).toBe(nq * 10);
      expectExact(result, bruteForce(base, queries, dim, 11, index.metric), 10, 1e-3);
    });
  }

  it('pads with label -1 and the worst distance where fewer than k vectors exist, empty included', () => {
    using l2 = Index.create({ kind: 'flat-l2', dim: 2 });
    using ip = Index.create({ kind: 'flat-ip', dim: 2 });
    expect(l2.search(new Float32Array([1, 0]), 2)).toEqual({
      distances: new Float32Array([Infinity, Infinity]),
      labels: new BigInt64Array([-1n, -1n]),
    });
    l2.add(new Float32Array([1, 0, 0, 3]));
    ip.add(new Float32Array([1, 0, 0, 3]));
    expect(l2.search(new Float32Array([1, 1]), 3)).toEqual({
      distances: new Float32Array([1, 5, Infinity]),
      labels: new BigInt64Array([0n, 1n, -1n]),
    });
    expect(ip.search(new Float32Array([1, 1]), 3)).toEqual({
      distances: new Float32Array([3, 1, -Infinity]),
      labels: new BigInt64Array([1n, 0n, -1n]),
    });
    l2.reset();
    expect(l2.ntotal).toBe(0);
    expect(l2.search(new Float32Array(2), 1).labels).toEqual(new BigInt64Array([-1n]));
    expect(l2.search(new Float32Array(0), 4).labels.length).toBe(0);
  });
});

describe('hnsw', () => {
  const dim = 32;
  const base = gaussian(2000 * dim, 11);
  const queries = gaussian(200 * dim, 12);

  for (const metric of ['l2', 'ip'] as const) {
    it(`recall@10 is at least 0.9 with the defaults, and rises with efSearch (${metric})`, () => {
      using index = Index.create({ kind: 'hnsw', dim, metric });
      index.add(base);
      expect(index.efSearch).toBe(16);
      const truth = bruteForce(base, queries, dim, 10, metric);
      const r16 = recall(index.search(queries, 10), truth, 10);
      index.efSearch = 128;
      const r128 = recall(index.search(queries, 10), truth, 10);
      console.log(`hnsw ${metric}: recall@10 ${r16.toFixed(3)} at efSearch 16, ${r128.toFixed(3)} at 128`);
      expect(r16).toBeGreaterThanOrEqual(0.9);
      expect(r128).toBeGreaterThanOrEqual(0.98);
      expect(r128).toBeGreaterThanOrEqual(r16);
    });
  }

  it('takes hnswM and efSearch at creation', () => {
    using index = Index.create({ kind: 'hnsw', dim: 4, hnswM: 8, efSearch: 50 });
    expect([index.metric, index.efSearch]).toEqual(['l2', 50]);
    using flat = Index.create({ kind: 'flat-ip', dim: 4 });
    expect(flat.efSearch).toBeUndefined();
  });
});

describe('save and load', () => {
  const dim = 24;
  const base = gaussian(500 * dim, 21);
  const queries = gaussian(20 * dim, 22);

  for (const kind of ['flat-ip', 'flat-l2', 'hnsw'] as const) {
    it(`${kind}: a loaded index gives identical search results`, () => {
      const path = join(dir, `${kind}.faiss`);
      using index = Index.create({ kind, dim, ...(kind === 'hnsw' ? { metric: 'ip', efSearch: 40 } : {}) });
      index.add(base);
      index.save(path);
      using loaded = Index.load(path);
      expect([loaded.kind, loaded.metric, loaded.dim, loaded.ntotal, loaded.efSearch]).toEqual([
        index.kind,
        index.metric,
        dim,
        500,
        index.efSearch,
      ]);
      expect(loaded.search(queries, 7)).toEqual(index.search(queries, 7));
    });
  }

  it('replaces an existing file whole and leaves no temporary file, even when it fails', () => {
    const sub = mkdtempSync(join(dir, 'atomic-'));
    const path = join(sub, 'index.faiss');
    using small = Index.create({ kind: 'flat-l2', dim });
    small.add(base.subarray(0, 3 * dim));
    small.save(path);
    using big = Index.create({ kind: 'flat-l2', dim });
    big.add(base);
    big.save(path);
    using loaded = Index.load(path);
    expect(loaded.ntotal).toBe(500);
    expect(readdirSync(sub)).toEqual(['index.faiss']);
    expectPlainError(() => big.save(join(sub, 'no-such-dir', 'x.faiss')), 'Index.save: cannot create', 'No such file or directory');
    expect(readdirSync(sub)).toEqual(['index.faiss']);
  });
});

describe('kmeans', () => {
  const dim = 8;
  const per = 100;
  // Four blobs with unit noise, their centres 28 apart.
  const centres = [0, 1, 2, 3].map((b) => Array.from({ length: dim }, (_, j) => (j === b ? 20 : 0)));
  const noise = gaussian(4 * per * dim, 31);
  const blobs = noise.map((v, i) => v + centres[Math.floor(i / dim / per)]![i % dim]!);

  function expectBlobs(assignments: Int32Array): void {
    const clusters = [0, 1, 2, 3].map((b) => assignments[b * per]!);
    expect(new Set(clusters).size).toBe(4);
    for (let i = 0; i < 4 * per; i++) expect(assignments[i], `point ${i}`).toBe(clusters[Math.floor(i / per)]);
  }

  it('finds four well-separated blobs, with centroids at their means', () => {
    const { centroids, assignments, objective } = kmeans(blobs, { dim, k: 4 });
    expect(centroids).toBeInstanceOf(Float32Array);
    expect(assignments).toBeInstanceOf(Int32Array);
    expect([centroids.length, assignments.length]).toEqual([4 * dim, 4 * per]);
    expectBlobs(assignments);
    let sum = 0;
    for (let b = 0; b < 4; b++) {
      const c = assignments[b * per]!;
      for (let j = 0; j < dim; j++) {
        let mean = 0;
        for (let i = 0; i < per; i++) mean += blobs[(b * per + i) * dim + j]! / per;
        expect(centroids[c * dim + j]).toBeCloseTo(mean, 4);
        for (let i = 0; i < per; i++) sum += (blobs[(b * per + i) * dim + j]! - centroids[c * dim + j]!) ** 2;
      }
    }
    expect(objective).toBeCloseTo(sum, 1);
  });

  it('gives the same result under the same seed, and finds the blobs from every seed tried', () => {
    const a = kmeans(blobs, { dim, k: 4, seed: 5, iterations: 10 });
    const b = kmeans(blobs, { dim, k: 4, seed: 5, iterations: 10 });
    expect(b).toEqual(a);
    for (let seed = 0; seed < 20; seed++) expectBlobs(kmeans(blobs, { dim, k: 4, seed }).assignments);
  });

  it('spherical: unit-length centroids', () => {
    const { centroids, assignments } = kmeans(blobs, { dim, k: 4, spherical: true });
    expectBlobs(assignments);
    for (let c = 0; c < 4; c++) expect(Math.hypot(...centroids.subarray(c * dim, (c + 1) * dim))).toBeCloseTo(1, 5);
  });
});

describe('async', () => {
  it('addAsync, searchAsync and kmeansAsync give the same results as the sync calls', async () => {
    const dim = 16;
    const base = gaussian(3000 * dim, 41);
    const queries = gaussian(100 * dim, 42);
    using sync = Index.create({ kind: 'hnsw', dim });
    using async = Index.create({ kind: 'hnsw', dim });
    sync.add(base);
    const added = async.addAsync(base);
    expect(added).toBeInstanceOf(Promise);
    await added;
    expect(async.ntotal).toBe(3000);
    // HNSW builds its graph in parallel, so compare searches of one graph (and flat ones exactly).
    expect(await sync.searchAsync(queries, 5)).toEqual(sync.search(queries, 5));
    using flat = Index.create({ kind: 'flat-l2', dim });
    await flat.addAsync(base);
    expect(await flat.searchAsync(queries, 5)).toEqual(flat.search(queries, 5));
    expect(await kmeansAsync(base, { dim, k: 10, seed: 3 })).toEqual(kmeans(base, { dim, k: 10, seed: 3 }));
  });

  it('keeps the event loop ticking during a large search and a k-means', async () => {
    const dim = 64;
    using index = Index.create({ kind: 'flat-l2', dim });
    index.add(gaussian(50_000 * dim, 51));
    const queries = gaussian(2000 * dim, 52);
    const data = gaussian(20_000 * dim, 53);
    for (const [name, work] of [
      ['search 2000 queries in 50000 x 64', () => index.searchAsync(queries, 10)],
      ['kmeans 20000 x 64 into 64 clusters', () => kmeansAsync(data, { dim, k: 64, iterations: 10 })],
    ] as const) {
      let ticks = 0;
      const timer = setInterval(() => ticks++, 1);
      const started = performance.now();
      await work();
      const ms = performance.now() - started;
      clearInterval(timer);
      console.log(`async ${name}: ${ms.toFixed(0)} ms; the event loop ticked ${ticks} times`);
      expect(ms).toBeGreaterThan(20);
      expect(ticks).toBeGreaterThan(5);
    }
  });

  it('an index disposed while a search runs finishes that search, then refuses more', async () => {
    const dim = 32;
    const index = Index.create({ kind: 'flat-ip', dim });
    const base = gaussian(20_000 * dim, 61);
    index.add(base);
    const queries = gaussian(500 * dim, 62);
    const expected = index.search(queries, 3);
    const pending = index.searchAsync(queries, 3);
    index.dispose();
    expect(index.disposed).toBe(true);
    expect(await pending).toEqual(expected);
    expectError(() => index.search(queries, 3), TypeError, 'Index.search: the index is disposed');
    await expect(index.addAsync(base)).rejects.toThrow('Index.addAsync: the index is disposed');
  });

  it('rejects with the same error class and message as the sync calls', async () => {
    using index = Index.create({ kind: 'flat-l2', dim: 2 });
    await expect(index.searchAsync(new Float32Array([0, Number.NaN]), 1)).rejects.toThrow(RangeError);
    await expect(index.searchAsync(new Float32Array([0, Number.NaN]), 1)).rejects.toThrow(
      'Index.search: queries hold NaN at vector 0, component 1',
    );
    await expect(index.addAsync([1, 2] as never)).rejects.toThrow(TypeError);
    await expect(kmeansAsync(new Float32Array(6), { dim: 2, k: 4 })).rejects.toThrow(
      'kmeans: k=4 clusters need at least 4 points, got 3',
    );
  });
});

describe('vectors are read in place', () => {
  it('a Float32Array view at an offset into a larger buffer is read from its own elements', async () => {
    const dim = 8;
    const base = gaussian(300 * dim, 71);
    const queries = gaussian(10 * dim, 72);
    // NaN all around the views: reading one element outside them would fail the NaN check.
    const buffer = new Float32Array(3 + base.length + 5 + queries.length + 7).fill(Number.NaN);
    const baseView = buffer.subarray(3, 3 + base.length);
    const queryView = buffer.subarray(3 + base.length + 5, 3 + base.length + 5 + queries.length);
    baseView.set(base);
    queryView.set(queries);
    expect(queryView.byteOffset).toBe((3 + base.length + 5) * 4);
    using fromView = Index.create({ kind: 'flat-l2', dim });
    fromView.add(baseView);
    using fromCopy = Index.create({ kind: 'flat-l2', dim });
    fromCopy.add(base);
    expect(fromView.search(queryView, 4)).toEqual(fromCopy.search(queries, 4));
    expect(await fromView.searchAsync(queryView, 4)).toEqual(fromCopy.search(queries, 4));
    expect(kmeans(baseView, { dim, k: 3 })).toEqual(kmeans(base, { dim, k: 3 }));
  });
});

describe('bad input gives clear errors', () => {
  const flat = () => Index.create({ kind: 'flat-l2', dim: 4 });

  it('1. an unknown kind or metric, or a metric the kind contradicts', () => {
    expectError(() => Index.create({ kind: 'ivf' as never, dim: 4 }), TypeError, "Index.create: unknown kind 'ivf'; expected 'flat-ip', 'flat-l2' or 'hnsw'");
    expectError(() => Index.create({ kind: 'hnsw', dim: 4, metric: 'cosine' as never }), TypeError, "Index.create: unknown metric 'cosine'");
    expectError(() => Index.create({ kind: 'flat-ip', dim: 4, metric: 'l2' }), RangeError, "Index.create: kind 'flat-ip' searches by metric 'ip', got metric 'l2'");
  });

  it('2. a bad dimension or hnswM', () => {
    expectError(() => Index.create({ kind: 'flat-ip', dim: 0 }), RangeError, 'Index.create: dim must be an integer from 1 to 2147483647, got 0');
    expectError(() => Index.create({ kind: 'flat-ip', dim: '4' as never }), TypeError, "Index.create: dim must be an integer, got string '4'");
    expectError(() => Index.create({ kind: 'flat-ip', dim: 1.5 }), RangeError, 'Index.create: dim must be an integer, got number 1.5');
    expectError(() => Index.create({ kind: 'hnsw', dim: 4, hnswM: 1 }), RangeError, 'Index.create: hnswM must be an integer from 2 to 256, got 1');
    expectError(() => Index.create(undefined as never), TypeError, 'Index.create: options must be an object, got undefined');
  });

  it('3. vectors that are not a Float32Array', () => {
    using index = flat();
    expectError(() => index.add(new Float64Array(8) as never), TypeError, 'Index.add: vectors must be a Float32Array, got Float64Array(8)');
    expectError(() => index.add([1, 2, 3, 4] as never), TypeError, 'Index.add: vectors must be a Float32Array, got Array(4)');
    expectError(() => index.search('abc' as never, 1), TypeError, "Index.search: queries must be a Float32Array, got string 'abc'");
  });

  it('4. a length that is not a multiple of the dimension', () => {
    using index = flat();
    expectError(() => index.add(new Float32Array(10)), RangeError, 'Index.add: vectors has 10 elements, which is not a multiple of the dimension 4');
    expectError(() => index.search(new Float32Array(5), 1), RangeError, 'Index.search: queries has 5 elements, which is not a multiple of the dimension 4');
  });

  it('5. a bad k', () => {
    using index = flat();
    expectError(() => index.search(new Float32Array(4), 0), RangeError, 'Index.search: k must be >= 1, got 0');
    expectError(() => index.search(new Float32Array(4), -3), RangeError, 'Index.search: k must be >= 1, got -3');
    expectError(() => index.search(new Float32Array(4), 'x' as never), TypeError, "Index.search: k must be an integer, got string 'x'");
    expectError(() => index.search(new Float32Array(4), 2.5), RangeError, 'Index.search: k must be an integer, got number 2.5');
    expectError(() => index.search(new Float32Array(8), 2 ** 52), RangeError, 'Index.search: cannot allocate 9007199254740992 results');
  });

  it('6. NaN or Infinity in vectors or queries', () => {
    using index = flat();
    expectError(() => index.add(new Float32Array([0, 0, 0, 0, 1, 2, Number.NaN, 4])), RangeError, 'Index.add: vectors hold NaN at vector 1, component 2');
    expect(index.ntotal).toBe(0); // nothing was added
    expectError(() => index.search(new Float32Array([0, -Infinity, 0, 0]), 1), RangeError, 'Index.search: queries hold -Infinity at vector 0, component 1');
    expectError(() => kmeans(new Float32Array([1, Infinity, 0, 0]), { dim: 2, k: 1 }), RangeError, 'kmeans: data hold Infinity at vector 0, component 1');
  });

  it('7. a disposed index', () => {
    const index = flat();
    index.dispose();
    index.dispose(); // twice is fine
    expectError(() => index.add(new Float32Array(4)), TypeError, 'Index.add: the index is disposed');
    expectError(() => index.ntotal, TypeError, 'Index.ntotal: the index is disposed');
    expectError(() => index.save(join(dir, 'x')), TypeError, 'Index.save: the index is disposed');
  });

  it('8. kmeans with too few points, a bad k, iterations or seed, or missing options', () => {
    const data = new Float32Array(6);
    expectError(() => kmeans(data, { dim: 2, k: 10 }), RangeError, 'kmeans: k=10 clusters need at least 10 points, got 3');
    expectError(() => kmeans(data, { dim: 2, k: 0 }), RangeError, 'kmeans: k must be an integer from 1 to 2147483647, got 0');
    expectError(() => kmeans(data, { dim: 2, k: 2, iterations: 0 }), RangeError, 'kmeans: iterations must be an integer from 1 to 2147483647, got 0');
    expectError(() => kmeans(data, { dim: 2, k: 2, seed: -1 }), RangeError, 'kmeans: seed must be an integer from 0 to 2147483647, got -1');
    expectError(() => kmeans(data, { dim: 4, k: 1 }), RangeError, 'kmeans: data has 6 elements, which is not a multiple of the dimension 4');
    expectError(() => kmeans(data, { k: 1 } as never), TypeError, 'kmeans: dim must be an integer, got undefined');
    expectError(() => kmeans(data, { dim: 2, k: 1, spherical: 1 as never }), TypeError, 'kmeans: spherical must be a boolean, got number 1');
    expectError(() => kmeans(data, undefined as never), TypeError, 'kmeans: options must be an object, got undefined');
  });

  it('9. loading a missing file, a file that is no index, or no path', () => {
    expectPlainError(() => Index.load(join(dir, 'missing.faiss')), `Index.load: cannot open '${join(dir, 'missing.faiss')}': No such file or directory`);
    const junk = join(dir, 'junk.faiss');
    writeFileSync(junk, 'not an index at all');
    expectPlainError(() => Index.load(junk), `Index.load: '${junk}' is not a readable FAISS index`);
    expectError(() => Index.load(42 as never), TypeError, 'Index.load: path must be a string, got number 42');
    using index = flat();
    expectError(() => index.save(undefined as never), TypeError, 'Index.save: path must be a string, got undefined');
  });

  it('10. efSearch on a flat index, or out of range', () => {
    using index = flat();
    expectError(() => (index.efSearch = 32), TypeError, 'Index.efSearch: only hnsw indexes have efSearch; this one is flat-l2');
    using hnsw = Index.create({ kind: 'hnsw', dim: 4 });
    expectError(() => (hnsw.efSearch = 0), RangeError, 'Index.efSearch: must be an integer from 1 to 2147483647, got 0');
    expectError(() => (hnsw.efSearch = '8' as never), TypeError, "Index.efSearch: value must be an integer, got string '8'");
    expect(hnsw.efSearch).toBe(16);
  });

  it('11. the native class refuses a call without options', () => {
    const Raw = native().Index as unknown as new () => unknown;
    expectError(() => new Raw(), TypeError, 'Index.create: options must be an object, got undefined');
  });

  it('after all of that the process still searches', () => {
    using index = flat();
    index.add(new Float32Array([1, 0, 0, 0, 0, 1, 0, 0]));
    expect(index.search(new Float32Array([0, 2, 0, 0]), 1).labels).toEqual(new BigInt64Array([1n]));
  });
});

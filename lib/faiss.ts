// Nearest-neighbour search and k-means on FAISS. Vectors are Float32Arrays of n rows of `dim`
// floats, row-major, read in place by the addon (no copy; a view into a larger buffer works).
// An async call reads or fills its arrays while it runs: leave them untouched until it settles.
// Arguments are checked natively, as for tensors; bad ones throw TypeError/RangeError.
import {
  type IndexKind,
  type IndexMetric,
  type KMeansResult,
  type NativeIndex,
  native,
  type SearchResult,
} from './native.js';

export type { IndexKind, IndexMetric, KMeansResult, SearchResult };

/** Options of {@link Index.create}. */
export interface IndexOptions {
  /** 'flat-ip' and 'flat-l2' search exhaustively (exact); 'hnsw' searches a graph (approximate, fast). */
  kind: IndexKind;
  /** Floats per vector. */
  dim: number;
  /** hnsw only: 'l2' (default) or 'ip'. The flat kinds imply theirs; a different one is refused. */
  metric?: IndexMetric;
  /** hnsw only: graph neighbours per vector, 2 to 256 (default 32). More: better recall, more memory. */
  hnswM?: number;
  /** hnsw only: candidates kept while searching (default 16). More: better recall, slower. */
  efSearch?: number;
}

/**
 * A FAISS index owning native memory: free it with dispose() or `using`. Labels are the
 * insertion order of the vectors (0, 1, ...). Results hold k entries per query, best first:
 * smallest squared L2 distance, or largest inner product. Where fewer than k vectors exist the
 * remaining entries have label -1n and distance Infinity (l2) or -Infinity (ip); searching an
 * empty index is not an error.
 *
 * Async calls run on the libuv pool and may overlap: searches run together, adds one at a time.
 * A sync call made while an async add is running waits for it. dispose() during async work is
 * safe: the work finishes and the memory is freed after it.
 */
export class Index implements Disposable {
  private constructor(private readonly handle: NativeIndex) {}

  /**
   * A new, empty index.
   * @param options - kind, dimension and the HNSW settings.
   * @returns the index.
   * @throws TypeError/RangeError for a bad option, naming it and its value.
   * @example
   * ```ts
   * using index = Index.create({ kind: 'flat-ip', dim: 384 });
   * index.add(new Float32Array(100 * 384)); // n * 384 floats, row-major: 100 vectors
   * const { labels, distances } = index.search(new Float32Array(384), 5); // one query
   * ```
   */
  static create(options: IndexOptions): Index {
    return new Index(new (native().Index)(options));
  }

  /**
   * Reads an index written by save() (or by FAISS's write_index, if flat or HNSW-flat).
   * @param path - the index file.
   * @returns the index.
   * @throws Error naming the file when it is missing, unreadable or of another kind.
   * @example
   * ```ts
   * const index = Index.load('pool.faiss');
   * ```
   */
  static load(path: string): Index {
    return new Index(native().Index.load(path));
  }

  /** The kind given to {@link Index.create}. */
  get kind(): IndexKind {
    return this.handle.kind;
  }
  /** 'ip' (inner product, larger is nearer) or 'l2' (squared distance, smaller is nearer). */
  get metric(): IndexMetric {
    return this.handle.metric;
  }
  /** Floats per vector. */
  get dim(): number {
    return this.handle.dim;
  }
  /** Vectors stored. */
  get ntotal(): number {
    return this.handle.ntotal;
  }
  /** Whether dispose() has freed the index. */
  get disposed(): boolean {
    return this.handle.disposed;
  }
  /** hnsw only (undefined for flat kinds); kept by save() and load(). */
  get efSearch(): number | undefined {
    return this.handle.efSearch;
  }
  /** Sets the HNSW candidates kept while searching (hnsw only). */
  set efSearch(value: number) {
    this.handle.efSearch = value;
  }

  /**
   * Appends vectors.length / dim vectors; their labels continue from {@link Index.ntotal}.
   * @param vectors - n * dim floats, row-major.
   * @throws RangeError when the length is not a multiple of dim; TypeError for a non-Float32Array.
   * @example
   * ```ts
   * index.add(new Float32Array([1, 0, 0, 1])); // two 2-d vectors, labels 0 and 1
   * ```
   */
  add(vectors: Float32Array): void {
    this.handle.add(vectors);
  }
  /**
   * {@link Index.add} on the libuv pool; leave `vectors` untouched until it settles.
   * @param vectors - n * dim floats, row-major.
   * @returns a promise that settles when the vectors are in.
   * @throws (rejects with) the errors of add().
   * @example
   * ```ts
   * await index.addAsync(new Float32Array(100 * index.dim));
   * ```
   */
  async addAsync(vectors: Float32Array): Promise<void> {
    return this.handle.addAsync(vectors);
  }

  /**
   * The k nearest stored vectors of each of queries.length / dim queries.
   * @param queries - m * dim floats, row-major.
   * @param k - neighbours per query, a positive integer.
   * @returns m * k labels (BigInt64Array) and distances (Float32Array), best first per query.
   * @throws RangeError for a bad k or a length that is not a multiple of dim.
   * @example
   * ```ts
   * const { labels, distances } = index.search(new Float32Array([1, 0]), 1); // labels[0] === 0n
   * ```
   */
  search(queries: Float32Array, k: number): SearchResult {
    return this.handle.search(queries, k);
  }
  /**
   * {@link Index.search} on the libuv pool; searches may run together.
   * @param queries - m * dim floats, row-major.
   * @param k - neighbours per query.
   * @returns a promise of the labels and distances.
   * @throws (rejects with) the errors of search().
   * @example
   * ```ts
   * const hits = await index.searchAsync(new Float32Array(3 * index.dim), 10); // 3 queries, 10 hits each
   * ```
   */
  async searchAsync(queries: Float32Array, k: number): Promise<SearchResult> {
    return this.handle.searchAsync(queries, k);
  }

  /**
   * Removes every vector; the kind, dimension and settings stay.
   * @example
   * ```ts
   * index.reset(); // index.ntotal === 0
   * ```
   */
  reset(): void {
    this.handle.reset();
  }

  /**
   * Writes the index atomically: a temporary file beside `path`, fsynced, renamed over it.
   * @param path - the file to write.
   * @throws Error naming the path when it cannot be written.
   * @example
   * ```ts
   * index.save('pool.faiss');
   * ```
   */
  save(path: string): void {
    this.handle.save(path);
  }

  /**
   * Frees the native memory now. Safe to call twice; any later use throws.
   * @example
   * ```ts
   * index.dispose();
   * ```
   */
  dispose(): void {
    this.handle.dispose();
  }
  /**
   * {@link Index.dispose}, for `using` declarations.
   * @example
   * ```ts
   * { using index = Index.create({ kind: 'flat-l2', dim: 8 }); }
   * ```
   */
  [Symbol.dispose](): void {
    this.dispose();
  }
}

/** Options of {@link kmeans}. */
export interface KMeansOptions {
  /** Floats per point. */
  dim: number;
  /** Clusters; data must hold at least k points. */
  k: number;
  /** Lloyd iterations (default 25). */
  iterations?: number;
  /** Initial centroids are drawn from the data with this seed (default 1234); same seed, same result. */
  seed?: number;
  /** Unit-length centroids, points assigned by inner product (cosine k-means on normalised data). */
  spherical?: boolean;
}

/**
 * k-means (FAISS Clustering) over all points of `data`; assignments are cluster numbers 0..k-1.
 * @param data - n * dim floats, row-major.
 * @param options - dim, k and the iteration settings.
 * @returns the k centroids and each point's cluster.
 * @throws RangeError when data holds fewer than k points or its length is not a multiple of dim.
 * @example
 * ```ts
 * const points = new Float32Array([0, 0, 0, 1, 5, 5, 5, 6, 9, 0, 9, 1]); // six 2-d points
 * const { centroids, assignments } = kmeans(points, { dim: 2, k: 3, seed: 7 });
 * ```
 */
export function kmeans(data: Float32Array, options: KMeansOptions): KMeansResult {
  return native().kmeans(data, options);
}

/**
 * {@link kmeans} on the libuv pool: the event loop keeps running while it computes.
 * @param data - n * dim floats, row-major; leave it untouched until the promise settles.
 * @param options - dim, k and the iteration settings.
 * @returns a promise of the centroids and assignments.
 * @throws (rejects with) the errors of kmeans().
 * @example
 * ```ts
 * const { centroids } = await kmeansAsync(new Float32Array([0, 0, 0, 1, 5, 5, 5, 6, 9, 0, 9, 1]), { dim: 2, k: 3 });
 * ```
 */
export async function kmeansAsync(data: Float32Array, options: KMeansOptions): Promise<KMeansResult> {
  return native().kmeansAsync(data, options);
}

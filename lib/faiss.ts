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

export interface IndexOptions {
  /** 'flat-ip' and 'flat-l2' search exhaustively (exact); 'hnsw' searches a graph (approximate, fast). */
  kind: IndexKind;
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

  static create(options: IndexOptions): Index {
    return new Index(new (native().Index)(options));
  }

  /** Reads an index written by save() (or by FAISS's write_index, if flat or HNSW-flat). */
  static load(path: string): Index {
    return new Index(native().Index.load(path));
  }

  get kind(): IndexKind {
    return this.handle.kind;
  }
  get metric(): IndexMetric {
    return this.handle.metric;
  }
  get dim(): number {
    return this.handle.dim;
  }
  /** Vectors stored. */
  get ntotal(): number {
    return this.handle.ntotal;
  }
  get disposed(): boolean {
    return this.handle.disposed;
  }
  /** hnsw only (undefined for flat kinds); kept by save() and load(). */
  get efSearch(): number | undefined {
    return this.handle.efSearch;
  }
  set efSearch(value: number) {
    this.handle.efSearch = value;
  }

  /** Appends vectors.length / dim vectors. */
  add(vectors: Float32Array): void {
    this.handle.add(vectors);
  }
  async addAsync(vectors: Float32Array): Promise<void> {
    return this.handle.addAsync(vectors);
  }

  /** The k nearest stored vectors of each of queries.length / dim queries. */
  search(queries: Float32Array, k: number): SearchResult {
    return this.handle.search(queries, k);
  }
  async searchAsync(queries: Float32Array, k: number): Promise<SearchResult> {
    return this.handle.searchAsync(queries, k);
  }

  /** Removes every vector; the kind, dimension and settings stay. */
  reset(): void {
    this.handle.reset();
  }

  /** Writes the index atomically: a temporary file beside `path`, fsynced, renamed over it. */
  save(path: string): void {
    this.handle.save(path);
  }

  /** Frees the native memory now. Safe to call twice; any later use throws. */
  dispose(): void {
    this.handle.dispose();
  }
  [Symbol.dispose](): void {
    this.dispose();
  }
}

export interface KMeansOptions {
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

/** k-means (FAISS Clustering) over all points of `data`; assignments are cluster numbers 0..k-1. */
export function kmeans(data: Float32Array, options: KMeansOptions): KMeansResult {
  return native().kmeans(data, options);
}

/** kmeans on the libuv pool: the event loop keeps running while it computes. */
export async function kmeansAsync(data: Float32Array, options: KMeansOptions): Promise<KMeansResult> {
  return native().kmeansAsync(data, options);
}

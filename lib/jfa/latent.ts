// JFA's latent tasks: a pool of C groups x Q low-rank increments on o_proj, each with a fixed
// random key in the embedding space. Samples are grouped by k-means over their embeddings; each
// sample uses the top-k keys of its group by cosine similarity, weighted by similarity / sum.
// Keys and embeddings are fixed during a run, so retrieval runs once, before training; inference
// embeds a prompt the same way and retrieves its tasks with the same keys and centroids.
import { type FlashbackRecord, type InstanceRecord } from '../data/records.js';
import { createRng } from '../data/rng.js';
import { Index, kmeans } from '../faiss.js';
import { loraInit } from '../kernels.js';
import { type LlamaModel } from '../model/llama.js';
import { type Tokenizer } from '../model/tokenizer.js';
import { type Device } from '../device.js';
import { tensor, type Tensor, zeros } from '../tensor.js';
import { promptBatch } from './examples.js';

/** The latent-task pool's size and retrieval; the defaults are the paper's released settings. */
export interface LatentOptions {
  /** Groups (released: 16). */
  groups?: number | undefined;
  /** Latent tasks per group (released: 24). */
  perGroup?: number | undefined;
  /** Tasks retrieved per sample (released: 2). */
  k?: number | undefined;
  /**
   * Factor on every retrieved weight (default 1: the paper's sim / sum). Below 1 the pool's
   * increments move more slowly than the adapter, so the adapter, which alone serves at
   * inference, keeps what the new tasks teach (see the demo's numbers in docs/demo.md).
   */
  scale?: number | undefined;
  /** Rank of each increment (released: 8). */
  rank?: number | undefined;
  /** seed of the keys and factors (default 0) */
  seed?: number | undefined;
  /**
   * Where the factors live: the model's device ('cpu', the default, 'cuda' or 'cuda:N'). They are
   * float32 on every device and for every model dtype: a bfloat16 model mixes them in bfloat16 and
   * their gradients reach these float32 masters.
   */
  device?: Device | undefined;
}

/** Each sample's latent tasks: what {@link LatentTasks.retrieve} returns. */
export interface Retrieval {
  /** (n, k) int64 into the pool */
  indices: Tensor;
  /** (n, k) float32, each row sums to `scale` */
  weights: Tensor;
}

/** A saved pool's contents: a LatentTasks rebuilt from them draws no new keys or factors. */
export interface LatentParts {
  /** (P, dim) unit keys */
  keys: Float32Array;
  /** (P, r, in) down projections */
  A: Tensor;
  /** (P, out, r) up projections */
  B: Tensor;
  /** (groups, dim) k-means centroids */
  centroids: Float32Array;
}

/**
 * Each record's sample embedding (n, hiddenSize): its own `embedding` when that has hiddenSize
 * values, else the base model's final hidden states (adapters off) averaged over its prompt tokens
 * (promptBatch: the first maxTokens tokens). One prompt per forward pass: a batch's shape changes
 * the rounding of every row (measured: up to 6e-8), and inference must retrieve exactly the tasks
 * training did; unpadded single prompts were also faster than batches of 16 here (1.3 s vs 1.8 s for
 * 160 prompts at hidden size 256).
 * @param model - the base model (adapters are switched off for the embedding).
 * @param tokenizer - its tokenizer.
 * @param records - the records to embed.
 * @param maxTokens - prompt tokens the embedding sees.
 * @returns n * hiddenSize floats, row-major.
 * @example
 * ```ts
 * const emb = embedRecords(model, tokenizer, records, 256);
 * ```
 */
export function embedRecords(model: LlamaModel, tokenizer: Tokenizer, records: Array<InstanceRecord | FlashbackRecord>, maxTokens: number): Float32Array {
  const dim = model.config.hiddenSize;
  const out = new Float32Array(records.length * dim);
  records.forEach((r, i) => {
    if (r.embedding?.length === dim) {
      out.set(r.embedding, i * dim);
      return;
    }
    const b = promptBatch(tokenizer, [r], maxTokens);
    const e = model.meanPooled(b.ids, { attentionMask: b.attentionMask, adapters: false });
    out.set(e.toTypedArray() as Float32Array, i * dim);
    for (const t of [b.ids, b.attentionMask, e]) t.dispose();
  });
  return out;
}

/** Unit-length rows of a (n, d) matrix, in place; a zero row stays zero. */
function normalizeRows(x: Float32Array, d: number): Float32Array {
  for (let i = 0; i < x.length; i += d) {
    let s = 0;
    for (let j = 0; j < d; j++) s += x[i + j]! ** 2;
    const inv = s > 0 ? 1 / Math.sqrt(s) : 0;
    for (let j = 0; j < d; j++) x[i + j]! *= inv;
  }
  return x;
}

/**
 * JFA's latent tasks: a pool of groups x perGroup low-rank increments with unit keys. Samples are
 * clustered into groups (k-means on their embeddings); each sample retrieves the top-k keys of its
 * group by cosine similarity, and the increments mix with weights sim / sum.
 *
 * @example
 * ```ts
 * const hidden = model.config.hiddenSize;
 * using tasks = new LatentTasks(hidden, hidden, hidden, { groups: 4, perGroup: 6, k: 2, rank: 4 });
 * const emb = embedRecords(model, tokenizer, records, 256);
 * tasks.fit(emb);
 * const { indices, weights } = tasks.retrieve(emb);
 * ```
 */
export class LatentTasks implements Disposable {
  /** groups (k-means clusters) */
  readonly groups: number;
  /** latent tasks per group */
  readonly perGroup: number;
  /** tasks retrieved per sample */
  readonly k: number;
  /** factor on the retrieved weights */
  readonly scale: number;
  /** (P, r, in) and (P, out, r): trained with the adapters (B starts at zero, as LoRA's). */
  readonly A: Tensor;
  /** (P, out, r) up projections, zero at first */
  readonly B: Tensor;
  /** (P, dim) unit keys; group g owns rows g * perGroup .. (g + 1) * perGroup - 1. */
  readonly keys: Float32Array;
  private fitted?: Float32Array;

  /**
   * A new pool, or one rebuilt from a saved pool's parts.
   * With `parts` (a saved pool), keys, factors and centroids are those; options.rank and seed are unused.
   * @param dim - the embeddings' size (the model's hidden size).
   * @param inFeatures - the input features of the layer the increments join (o_proj).
   * @param outFeatures - its output features.
   * @param options - groups, perGroup, k, scale, rank, seed.
   * @param parts - a saved pool's keys, factors and centroids.
   * @throws RangeError for a size that is not a positive integer, k above perGroup, or parts of the wrong shapes.
   * @example
   * ```ts
   * const tasks = new LatentTasks(256, 256, 256, { groups: 16, perGroup: 24, k: 2, rank: 8 });
   * ```
   */
  constructor(
    /** the embeddings' size */
    readonly dim: number,
    inFeatures: number,
    outFeatures: number,
    options: LatentOptions = {},
    parts?: LatentParts,
  ) {
    this.groups = options.groups ?? 16;
    this.perGroup = options.perGroup ?? 24;
    this.k = options.k ?? 2;
    this.scale = options.scale ?? 1;
    for (const [name, v] of [['groups', this.groups], ['perGroup', this.perGroup], ['k', this.k]] as const)
      if (!Number.isInteger(v) || v < 1) throw new RangeError(`latent tasks: ${name} must be a positive integer, got ${v}`);
    if (!(this.scale > 0)) throw new RangeError(`latent tasks: scale must be positive, got ${this.scale}`);
    if (this.k > this.perGroup) throw new RangeError(`latent tasks: k=${this.k} exceeds the ${this.perGroup} tasks of a group`);
    const pool = this.groups * this.perGroup;
    if (parts) {
      const [a, b] = [parts.A.shape, parts.B.shape];
      const shapeOk = a.length === 3 && b.length === 3 && a[0] === pool && b[0] === pool && a[2] === inFeatures && b[1] === outFeatures && a[1] === b[2];
      if (!shapeOk) throw new RangeError(`latent tasks: A [${a}] and B [${b}] must be [${pool}, r, ${inFeatures}] and [${pool}, ${outFeatures}, r] (${this.groups} groups x ${this.perGroup})`);
      if (parts.keys.length !== pool * dim) throw new RangeError(`latent tasks: keys hold ${parts.keys.length} values, expected ${pool} x ${dim}`);
      if (parts.centroids.length !== this.groups * dim) throw new RangeError(`latent tasks: centroids hold ${parts.centroids.length} values, expected ${this.groups} x ${dim}`);
      this.keys = parts.keys;
      this.A = parts.A;
      this.B = parts.B;
      this.fitted = parts.centroids;
      return;
    }
    const rank = options.rank ?? 8;
    const rng = createRng(options.seed ?? 0);
    // Random keys, orthonormal within a group where the dimension allows (Gram-Schmidt).
    this.keys = new Float32Array(pool * dim);
    for (let g = 0; g < this.groups; g++) {
      for (let q = 0; q < this.perGroup; q++) {
        const row = (g * this.perGroup + q) * dim;
        for (let j = 0; j < dim; j++) this.keys[row + j] = gaussian(rng.next.bind(rng));
        if (q < dim)
          for (let p = 0; p < q; p++) {
            const other = (g * this.perGroup + p) * dim;
            let dot = 0;
            for (let j = 0; j < dim; j++) dot += this.keys[row + j]! * this.keys[other + j]!;
            for (let j = 0; j < dim; j++) this.keys[row + j]! -= dot * this.keys[other + j]!;
          }
        normalizeRows(this.keys.subarray(row, row + dim), dim);
      }
    }
    // Each task's factors initialised like a LoRA adapter's: A kaiming-uniform, B zero.
    const flat = new Float32Array(pool * rank * inFeatures);
    const a = zeros([rank, inFeatures]);
    const b = zeros([outFeatures, rank]);
    for (let j = 0; j < pool; j++) {
      loraInit(a, b, { seed: (options.seed ?? 0) * 1000 + j });
      flat.set(a.toTypedArray() as Float32Array, j * rank * inFeatures);
    }
    a.dispose();
    b.dispose();
    // Drawn on the CPU (the same values on every device), then placed.
    this.A = tensor(flat, [pool, rank, inFeatures], { device: options.device }).setRequiresGrad();
    this.B = zeros([pool, outFeatures, rank], 'float32', { device: options.device }).setRequiresGrad();
  }

  /**
   * Groups the embeddings (n, dim) into `groups` clusters (k-means, cosine).
   * @param embeddings - n * dim floats.
   * @param seed - k-means' seed (default 0).
   * @returns each sample's group.
   * @throws RangeError when there are fewer samples than groups.
   * @example
   * ```ts
   * const groupOf = tasks.fit(embedRecords(model, tokenizer, records, 256));
   * ```
   */
  fit(embeddings: Float32Array, seed = 0): Int32Array {
    const data = normalizeRows(Float32Array.from(embeddings), this.dim);
    const n = data.length / this.dim;
    if (n < this.groups) throw new RangeError(`latent tasks: ${this.groups} groups need at least ${this.groups} samples, got ${n}`);
    const r = kmeans(data, { dim: this.dim, k: this.groups, seed, spherical: true });
    this.fitted = r.centroids;
    return r.assignments;
  }

  /** The groups' k-means centroids (groups, dim), once fit() ran (or the pool was loaded). */
  get centroids(): Float32Array | undefined {
    return this.fitted;
  }

  /** Rank of each increment. */
  get rank(): number {
    return this.A.shape[1]!;
  }

  /**
   * For each embedding (n, dim): its group's top-k keys by cosine similarity, weights sim / sum.
   * @param embeddings - n * dim floats.
   * @returns (n, k) indices and weights; dispose them when done.
   * @throws Error when fit() has not run.
   * @example
   * ```ts
   * const latent = tasks.retrieve(embedRecords(model, tokenizer, records, 256));
   * model.logits(ids, { latent });
   * ```
   */
  retrieve(embeddings: Float32Array): Retrieval {
    const centroids = this.fitted;
    if (!centroids) throw new Error('latent tasks: call fit() before retrieve()');
    const data = normalizeRows(Float32Array.from(embeddings), this.dim);
    const n = data.length / this.dim;
    using centroidIndex = Index.create({ kind: 'flat-ip', dim: this.dim });
    centroidIndex.add(centroids);
    const indices = new BigInt64Array(n * this.k);
    const weights = new Float32Array(n * this.k);
    const perGroup = Array.from({ length: this.groups }, (_, g) => {
      const index = Index.create({ kind: 'flat-ip', dim: this.dim });
      index.add(this.keys.subarray(g * this.perGroup * this.dim, (g + 1) * this.perGroup * this.dim));
      return index;
    });
    try {
      for (let i = 0; i < n; i++) {
        // One query per search: FAISS scores many queries at once with a matrix product, whose
        // rounding depends on how many there are; a prompt alone at inference must match training.
        const row = data.subarray(i * this.dim, (i + 1) * this.dim);
        const g = Number(centroidIndex.search(row, 1).labels[0]!);
        const { distances, labels } = perGroup[g]!.search(row, this.k);
        // Similarities below a small floor count as the floor: weights stay positive and defined.
        const sims = Array.from(distances, (s) => Math.max(s, 1e-6));
        const total = sims.reduce((a, b) => a + b, 0);
        for (let j = 0; j < this.k; j++) {
          indices[i * this.k + j] = BigInt(g * this.perGroup) + labels[j]!;
          weights[i * this.k + j] = (this.scale * sims[j]!) / total;
        }
      }
    } finally {
      perGroup.forEach((index) => index.dispose());
    }
    return { indices: tensor(indices, [n, this.k]), weights: tensor(weights, [n, this.k]) };
  }

  /**
   * Frees the factors' native memory now.
   * @example
   * ```ts
   * tasks.dispose();
   * ```
   */
  dispose(): void {
    this.A.dispose();
    this.B.dispose();
  }
  /**
   * {@link LatentTasks.dispose}, for `using` declarations.
   * @example
   * ```ts
   * { using tasks = new LatentTasks(64, 64, 64); }
   * ```
   */
  [Symbol.dispose](): void {
    this.dispose();
  }
}

/** A standard normal sample (Box-Muller) from a uniform [0, 1) source. */
function gaussian(uniform: () => number): number {
  const u = Math.max(uniform(), 1e-12);
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * uniform());
}

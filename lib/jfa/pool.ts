// A trained latent-task pool as a file beside its adapter, and its use at inference. The pool's
// increments train together with the adapter, so the adapter alone is not the model training made:
// in 'retrieve' mode inference embeds each prompt as training did, finds the same tasks, and adds
// their weighted increment to o_proj for the whole generation. The file says how it was made, so a
// model it does not fit is refused before anything runs.
import { existsSync } from 'node:fs';
import { join } from 'node:path';

import { type FlashbackRecord, type InstanceRecord } from '../data/records.js';
import { ModelFormatError } from '../errors.js';
import { type LlamaModel } from '../model/llama.js';
import { loadSafetensors, saveSafetensors } from '../model/safetensors.js';
import { type Tokenizer } from '../model/tokenizer.js';
import { type Tensor, tensor, zeros } from '../tensor.js';
import { embedRecords, LatentTasks, type Retrieval } from './latent.js';

/** The pool's file name inside an adapter directory. */
export const LATENT_POOL_FILE = 'latent_pool.safetensors';
/** The pool file's metadata 'format'. */
export const LATENT_POOL_FORMAT = 'jfa-latent-pool';
/** The pool file format's version this package reads and writes. */
export const LATENT_POOL_VERSION = 1;

/**
 * 'retrieve': the pool serves at inference (the increments the adapter trained with);
 * 'drop': the adapter was trained to stand alone (latent dropout), and serves without the pool.
 */
export const LATENT_MODES = ['retrieve', 'drop'] as const;
/** One of {@link LATENT_MODES}. */
export type LatentMode = (typeof LATENT_MODES)[number];

const EMBEDDING_METHOD =
  "mean-pooled final hidden state of the base model (adapters and latent tasks off) over the prompt's tokens " +
  "(instruction\\ninput\\n, or a flashback's prompt; BOS first, the first maxTokens tokens), one prompt per forward pass; " +
  "a record's own 'embedding' when it has hiddenSize values";

/** The JSON under the file's metadata key 'pool'. */
interface PoolDescription {
  groups: number;
  perGroup: number;
  k: number;
  scale: number;
  rank: number;
  layers: number[];
  mode: LatentMode;
  hiddenSize: number;
  oProjIn: number;
  oProjOut: number;
  embedding: { method: string; dim: number; maxTokens: number };
}

/** A pool in the model's increments at `layer`, with how its retrieval embeddings are made. */
export class LatentPool implements Disposable {
  /**
   * A pool of trained latent tasks, in the model at `layer`.
   * @param tasks - the trained latent tasks (fit() has run).
   * @param layer - the decoder layer whose o_proj carries the increments.
   * @param mode - how the adapter serves: with the pool ('retrieve') or alone ('drop').
   * @param maxTokens - prompt tokens the embeddings see.
   * @example
   * ```ts
   * const pool = new LatentPool(tasks, 2, 'retrieve', 256);
   * pool.save('adapter/latent_pool.safetensors');
   * ```
   */
  constructor(
    /** the latent tasks */
    readonly tasks: LatentTasks,
    /** the decoder layer whose o_proj carries the increments */
    readonly layer: number,
    /** how the adapter serves: with the pool, or alone */
    readonly mode: LatentMode,
    /** prompt tokens the embeddings see (the training run's maxTokens) */
    readonly maxTokens: number,
  ) {}

  /**
   * Writes keys, factors and centroids with a self-describing header (temporary name, fsync,
   * rename). A 'retrieve' pool is part of the model it was trained with: PEFT loads the adapter
   * beside it without it, so such a run serves through loadRun(), `jfa eval` or `jfa generate`.
   * @param file - the pool file to write (e.g. adapter/latent_pool.safetensors).
   * @throws Error naming the file when fit() never ran or it cannot be written.
   * @example
   * ```ts
   * pool.save(`runs/jfa/adapter/${LATENT_POOL_FILE}`);
   * ```
   */
  save(file: string): void {
    const t = this.tasks;
    const centroids = t.centroids;
    if (!centroids) throw new Error(`${file}: the latent pool has no centroids (fit() never ran), nothing to retrieve with`);
    const description: PoolDescription = {
      groups: t.groups,
      perGroup: t.perGroup,
      k: t.k,
      scale: t.scale,
      rank: t.rank,
      layers: [this.layer],
      mode: this.mode,
      hiddenSize: t.dim,
      oProjIn: t.A.shape[2]!,
      oProjOut: t.B.shape[1]!,
      embedding: { method: EMBEDDING_METHOD, dim: t.dim, maxTokens: this.maxTokens },
    };
    const owned = { keys: tensor(t.keys, [t.keys.length / t.dim, t.dim]), centroids: tensor(centroids, [t.groups, t.dim]) };
    try {
      saveSafetensors(file, { keys: owned.keys, A: t.A, B: t.B, centroids: owned.centroids }, {
        format: LATENT_POOL_FORMAT,
        version: String(LATENT_POOL_VERSION),
        pool: JSON.stringify(description),
      });
    } finally {
      owned.keys.dispose();
      owned.centroids.dispose();
    }
  }

  /**
   * Reads a pool file, checks it against `model` (hidden size, o_proj features, layer) and attaches
   * its increments to the model's o_proj. Every error names the file and what does not fit.
   * @param file - the pool file.
   * @param model - the model whose adapter it belongs with.
   * @returns the pool, attached to the model.
   * @throws Error naming the file for another format or version, a bad field, a missing tensor, or a model it does not fit.
   * @example
   * ```ts
   * const file = findLatentPool('runs/jfa/adapter');
   * const pool = file ? LatentPool.load(file, model) : undefined;
   * ```
   */
  static load(file: string, model: LlamaModel): LatentPool {
    let contents;
    try {
      contents = loadSafetensors(file);
    } catch (e) {
      const message = (e as Error).message;
      throw new ModelFormatError(message.includes(file) ? message : `${file}: ${message}`);
    }
    const { tensors, metadata } = contents;
    const release = () => Object.values(tensors).forEach((x) => x.dispose());
    try {
      const d = describe(file, metadata);
      const c = model.config;
      const oProjIn = c.numHeads * c.headDim;
      if (d.hiddenSize !== c.hiddenSize || d.oProjIn !== oProjIn || d.oProjOut !== c.hiddenSize)
        throw new ModelFormatError(
          `${file}: the pool is for a model of hidden size ${d.hiddenSize} with o_proj ${d.oProjIn} -> ${d.oProjOut}; ` +
            `this model has hidden size ${c.hiddenSize} with o_proj ${oProjIn} -> ${c.hiddenSize}`,
        );
      const layer = d.layers[0]!;
      if (layer >= c.numLayers) throw new ModelFormatError(`${file}: the pool is on layer ${layer}, but this model has layers 0..${c.numLayers - 1}`);
      const read = (name: string, shape: number[]): Tensor => {
        const x = tensors[name];
        if (!x) throw new ModelFormatError(`${file}: no tensor '${name}'`);
        if (x.dtype !== 'float32' && x.dtype !== 'bfloat16') throw new ModelFormatError(`${file}: tensor '${name}' is ${x.dtype}, expected float32`);
        if (x.shape.length !== shape.length || x.shape.some((v, i) => v !== shape[i]))
          throw new ModelFormatError(`${file}: tensor '${name}' is [${x.shape}], expected [${shape}] (from the file's description)`);
        return x;
      };
      const P = d.groups * d.perGroup;
      const floats = (x: Tensor) => x.toTypedArray() as Float32Array; // a copy, float32 from either dtype
      // Copies, not views of the file's mapping: training updates the factors in place. float32 on
      // the model's device whatever the model's dtype (float32 masters of a bfloat16 model).
      const own = (x: Tensor): Tensor => zeros(x.shape, 'float32', { device: model.device }).copyFrom(x);
      const parts = {
        keys: floats(read('keys', [P, d.hiddenSize])),
        A: own(read('A', [P, d.rank, d.oProjIn])).setRequiresGrad(),
        B: own(read('B', [P, d.oProjOut, d.rank])).setRequiresGrad(),
        centroids: floats(read('centroids', [d.groups, d.hiddenSize])),
      };
      const tasks = new LatentTasks(d.hiddenSize, d.oProjIn, d.oProjOut, { groups: d.groups, perGroup: d.perGroup, k: d.k, scale: d.scale }, parts);
      model.setLatentPool(layer, tasks.A, tasks.B);
      return new LatentPool(tasks, layer, d.mode, d.embedding.maxTokens);
    } finally {
      release();
    }
  }

  /**
   * Each record's latent tasks, (n, k) indices and weights: its prompt embedded and matched as in training.
   * @param model - the model the pool is attached to.
   * @param tokenizer - its tokenizer.
   * @param records - the records to serve.
   * @returns (n, k) indices and weights for the forward pass's `latent`; dispose them when done.
   * @example
   * ```ts
   * const latent = pool.retrieve(model, tokenizer, records);
   * await generateText(model, tokenizer, records.map(promptText), { latent });
   * ```
   */
  retrieve(model: LlamaModel, tokenizer: Tokenizer, records: Array<InstanceRecord | FlashbackRecord>): Retrieval {
    return this.tasks.retrieve(embedRecords(model, tokenizer, records, this.maxTokens));
  }

  /**
   * Frees the pool's native memory now.
   * @example
   * ```ts
   * pool.dispose();
   * ```
   */
  dispose(): void {
    this.tasks.dispose();
  }
  /**
   * {@link LatentPool.dispose}, for `using` declarations.
   * @example
   * ```ts
   * { using pool = LatentPool.load('runs/jfa/adapter/latent_pool.safetensors', model); }
   * ```
   */
  [Symbol.dispose](): void {
    this.dispose();
  }
}

/**
 * The pool file inside an adapter directory, if there is one.
 * @param adapterDir - an adapter directory.
 * @returns the pool file's path, or undefined.
 * @example
 * ```ts
 * findLatentPool('runs/jfa/adapter'); // 'runs/jfa/adapter/latent_pool.safetensors'
 * ```
 */
export function findLatentPool(adapterDir: string): string | undefined {
  const file = join(adapterDir, LATENT_POOL_FILE);
  return existsSync(file) ? file : undefined;
}

/** The file's description, every field checked; errors name the file and the field. */
function describe(file: string, metadata: Record<string, string>): PoolDescription {
  if (metadata.format !== LATENT_POOL_FORMAT)
    throw new ModelFormatError(`${file}: not a jfa latent pool (metadata 'format' is ${JSON.stringify(metadata.format)}, expected '${LATENT_POOL_FORMAT}')`);
  if (metadata.version !== String(LATENT_POOL_VERSION))
    throw new ModelFormatError(`${file}: latent pool format version ${JSON.stringify(metadata.version)} is not supported (this jfa-torch reads version ${LATENT_POOL_VERSION})`);
  let d: Record<string, unknown>;
  try {
    d = JSON.parse(metadata.pool ?? '') as Record<string, unknown>;
  } catch {
    throw new ModelFormatError(`${file}: metadata 'pool' is missing or not JSON`);
  }
  if (typeof d !== 'object' || d === null) throw new ModelFormatError(`${file}: metadata 'pool' is not an object`);
  const positive = (name: string, v: unknown, integer = true): number => {
    if (typeof v !== 'number' || !(v > 0) || (integer && !Number.isInteger(v)))
      throw new ModelFormatError(`${file}: field '${name}' must be a positive ${integer ? 'integer' : 'number'}, got ${JSON.stringify(v)}`);
    return v;
  };
  for (const name of ['groups', 'perGroup', 'k', 'rank', 'hiddenSize', 'oProjIn', 'oProjOut']) positive(name, d[name]);
  positive('scale', d.scale, false);
  if (!(LATENT_MODES as readonly unknown[]).includes(d.mode)) throw new ModelFormatError(`${file}: field 'mode' must be one of ${LATENT_MODES.join(', ')}, got ${JSON.stringify(d.mode)}`);
  const layers = d.layers;
  if (!Array.isArray(layers) || layers.length !== 1 || !Number.isInteger(layers[0]) || (layers[0] as number) < 0)
    throw new ModelFormatError(`${file}: field 'layers' must list one layer index (pools on several layers are not supported), got ${JSON.stringify(layers)}`);
  const e = d.embedding as Record<string, unknown> | undefined;
  if (typeof e !== 'object' || e === null) throw new ModelFormatError(`${file}: field 'embedding' is missing`);
  positive('embedding.maxTokens', e.maxTokens);
  if (e.dim !== d.hiddenSize) throw new ModelFormatError(`${file}: field 'embedding.dim' (${JSON.stringify(e.dim)}) must equal hiddenSize (${d.hiddenSize})`);
  if ((d.k as number) > (d.perGroup as number)) throw new ModelFormatError(`${file}: k=${d.k} exceeds the ${d.perGroup} tasks of a group`);
  return d as unknown as PoolDescription;
}

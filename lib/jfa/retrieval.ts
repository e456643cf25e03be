// A run's latent tasks: the pool (fresh, a continued round's, or a checkpoint's) and every record's
// retrieval, fixed before training so that the data order alone decides each step's increments.
// The retrieval is kept as typed arrays, selected per micro-batch, and saved with each checkpoint.
import { existsSync } from 'node:fs';
import { join } from 'node:path';

import { type LlamaModel } from '../model/llama.js';
import { saveSafetensors } from '../model/safetensors.js';
import { type Tokenizer } from '../model/tokenizer.js';
import { type Tensor, tensor } from '../tensor.js';
import { checkpointTensors } from './checkpoint.js';
import { embedRecords, LatentTasks } from './latent.js';
import { type RunPlan } from './plan.js';
import { LATENT_POOL_FILE, LatentPool } from './pool.js';

/** The latent tasks of each record, k per row: indices into the pool and their weights. */
export interface Retrieved {
  indices: BigInt64Array;
  weights: Float32Array;
}

/** The pool a run trains and the retrieval of its new-task records and of its flashbacks. */
export interface RunLatent {
  pool: LatentPool;
  retrieved: { new: Retrieved; flash: Retrieved };
}

/** The retrieval of no records. */
const NONE: Retrieved = Object.freeze({ indices: new BigInt64Array(0), weights: new Float32Array(0) });

/** A checkpoint's retrieved tasks per record (the pool itself is its LATENT_POOL_FILE). */
const RETRIEVAL = 'retrieval.safetensors';

/** The run's fresh latent tasks: the one place they are made from the plan's latent options. */
export function latentTasksFor(model: LlamaModel, plan: RunPlan): LatentTasks {
  const cfg = model.config;
  return new LatentTasks(cfg.hiddenSize, cfg.numHeads * cfg.headDim, cfg.hiddenSize, { seed: plan.seed, ...plan.latentOptions, device: model.device });
}

/** The pool of `tasks` at the plan's layer and mode, attached to the model. */
export function attachPool(model: LlamaModel, plan: RunPlan, tasks: LatentTasks): LatentPool {
  const pool = new LatentPool(tasks, plan.latentLayer, plan.latentRun.mode, plan.maxTokens);
  model.setLatentPool(pool.layer, tasks.A, tasks.B);
  return pool;
}

/**
 * Latent tasks: keys, groups and every record's retrieval, fixed before training; restored from a
 * checkpoint folder `from`, or kept from a continued round's pool `continued`.
 */
export function setUpLatent(model: LlamaModel, tokenizer: Tokenizer, plan: RunPlan, from?: string, continued?: LatentPool): RunLatent {
  if (from) {
    continued?.dispose();
    const poolFile = join(from, LATENT_POOL_FILE);
    if (!existsSync(poolFile)) throw new Error(`train: the checkpoint is incomplete: ${poolFile} is missing`);
    const pool = LatentPool.load(poolFile, model);
    const saved = checkpointTensors('train', join(from, RETRIEVAL), ['newIndices', 'newWeights', 'flashIndices', 'flashWeights']);
    const arrays = (i: string, w: string): Retrieved => ({ indices: saved[i]!.toTypedArray() as BigInt64Array, weights: saved[w]!.toTypedArray() as Float32Array });
    const retrieved = { new: arrays('newIndices', 'newWeights'), flash: arrays('flashIndices', 'flashWeights') };
    Object.values(saved).forEach((t) => t.dispose());
    return { pool, retrieved };
  }
  // A method without flashbacks (slm) neither embeds them nor lets them shape the groups.
  const flashbacks = plan.switches.divergence ? plan.flashbacks : [];
  if (continued) {
    // The previous round's pool keeps training: its keys and groups stay, this round's records are
    // retrieved with the model beneath the new adapter, as inference after this round will.
    const retrieved = { new: toArrays(continued.retrieve(model, tokenizer, plan.stream)), flash: flashbacks.length ? toArrays(continued.retrieve(model, tokenizer, flashbacks)) : NONE };
    return { pool: continued, retrieved };
  }
  const tasks = latentTasksFor(model, plan);
  const embNew = embedRecords(model, tokenizer, plan.stream, plan.maxTokens);
  const embFlash = embedRecords(model, tokenizer, flashbacks, plan.maxTokens);
  tasks.fit(concat(embNew, embFlash), plan.seed);
  const retrieved = { new: toArrays(tasks.retrieve(embNew)), flash: flashbacks.length ? toArrays(tasks.retrieve(embFlash)) : NONE };
  return { pool: attachPool(model, plan, tasks), retrieved };
}

/** Writes the pool and every record's retrieval into a checkpoint folder being filled. */
export function saveLatent(dir: string, latent: RunLatent): void {
  const { new: retrievedNew, flash: retrievedFlash } = latent.retrieved;
  const k = latent.pool.tasks.k;
  const owned = {
    newIndices: tensor(retrievedNew.indices, [retrievedNew.indices.length / k, k]),
    newWeights: tensor(retrievedNew.weights, [retrievedNew.weights.length / k, k]),
    flashIndices: tensor(retrievedFlash.indices, [retrievedFlash.indices.length / k, k]),
    flashWeights: tensor(retrievedFlash.weights, [retrievedFlash.weights.length / k, k]),
  };
  try {
    latent.pool.save(join(dir, LATENT_POOL_FILE));
    saveSafetensors(join(dir, RETRIEVAL), owned);
  } finally {
    Object.values(owned).forEach((t) => t.dispose());
  }
}

/** A retrieval's tensors as typed arrays; the tensors are freed. */
export function toArrays(r: { indices: Tensor; weights: Tensor }): Retrieved {
  const out = { indices: r.indices.toTypedArray() as BigInt64Array, weights: r.weights.toTypedArray() as Float32Array };
  r.indices.dispose();
  r.weights.dispose();
  return out;
}

/** The latent tasks of these rows, as the (rows, k) tensors a micro-batch carries. */
export function select(r: Retrieved, rows: number[], k: number): { indices: Tensor; weights: Tensor } {
  const indices = new BigInt64Array(rows.length * k);
  const weights = new Float32Array(rows.length * k);
  rows.forEach((row, i) => {
    indices.set(r.indices.subarray(row * k, (row + 1) * k), i * k);
    weights.set(r.weights.subarray(row * k, (row + 1) * k), i * k);
  });
  return { indices: tensor(indices, [rows.length, k]), weights: tensor(weights, [rows.length, k]) };
}

function concat(a: Float32Array, b: Float32Array): Float32Array {
  const out = new Float32Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

// Data-parallel training's own parts: the start-up check that every rank trains the same model on
// the same data with the same settings, rank 0's latent-task retrieval sent to the others (k-means
// and FAISS run there alone), and which rows of a micro-batch are this rank's.
import { hashString } from '../data/rng.js';
import { type DistributedOptions, ncclBuilt, ProcessGroup } from '../distributed.js';
import { CheckpointError, DistributedError, OptionError } from '../errors.js';
import { type LlamaModel } from '../model/llama.js';
import { tensor, zeros } from '../tensor.js';
import { type RunPlan, type TrainData, type TrainOptions } from './plan.js';
import { attachPool, latentTasksFor, type RunLatent } from './retrieval.js';
import { type StreamPosition } from './streamed.js';

/** This process's place in a data-parallel run. */
export interface Shard {
  rank: number;
  world: number;
}

/** The rows of a micro-batch this rank trains on: every world-th, from its rank. */
export function shardOf(rows: number[], shard: Shard): number[] {
  return rows.filter((_, j) => j % shard.world === shard.rank);
}

/**
 * Refuses, before any work, a data-parallel run whose collectives cannot carry the model's tensors:
 * a model on a GPU needs NCCL (Gloo carries CPU models, and is all a build without NCCL has); a
 * model on the CPU needs Gloo.
 * @param device - where the model trains ('cpu', 'cuda', 'cuda:N').
 * @param distributed - the run's options, or the group it joins.
 * @param built - whether this addon has NCCL (default: {@link ncclBuilt}).
 * @throws OptionError naming the device, the backend and what is missing.
 */
export function checkDataParallelDevice(device: string, distributed: DistributedOptions | ProcessGroup, built = ncclBuilt()): void {
  const gpu = device.startsWith('cuda');
  const backend = distributed instanceof ProcessGroup ? distributed.backend : (distributed.backend ?? 'auto');
  if (gpu && !built)
    throw new OptionError(
      `train: data-parallel training of a model on ${device} needs c10d's NCCL backend, which this build of the addon lacks ` +
        "(ncclBuilt() is false: it must be built against a CUDA libtorch with the headers of NCCL and the CUDA libraries, with JFA_NCCL=1; see docs/gpu.md); " +
        `train on the CPU (Gloo), or on ${device} in one process (drop distributed / --nproc)`,
    );
  if (gpu && backend === 'gloo') throw new OptionError(`train: backend gloo carries CPU models' gradients; a model on ${device} trains over nccl (backend 'auto' or 'nccl')`);
  if (!gpu && backend === 'nccl' && !(distributed instanceof ProcessGroup))
    throw new OptionError(`train: backend nccl carries CUDA tensors only; a model on ${device} trains over gloo (backend 'auto' or 'gloo')`);
}

/** A stable JSON text (sorted keys), so equal settings give equal text on every rank. */
function stableJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(stableJson).join(',')}]`;
  if (v && typeof v === 'object')
    return `{${Object.keys(v)
      .filter((k) => (v as Record<string, unknown>)[k] !== undefined && typeof (v as Record<string, unknown>)[k] !== 'function')
      .sort()
      .map((k) => `${JSON.stringify(k)}:${stableJson((v as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  return JSON.stringify(v) ?? 'null';
}

/** The model's identity: its config and every weight's name, shape and sum. */
function modelHash(model: LlamaModel): string {
  const parts: string[] = [stableJson(model.config)];
  for (const [name, t] of Object.entries(model.weights())) {
    const s = t.sum();
    parts.push(`${name}:${t.shape.join('x')}:${(s.toTypedArray() as Float32Array)[0]}`);
    s.dispose();
  }
  return hashString(parts.join('|')).toString(16);
}

/**
 * Start-up check of a data-parallel run: every rank must train the same model on the same data
 * with the same settings (the world size is checked when the group is joined). A mismatch is an
 * Error on every rank naming what differs and the ranks.
 */
export async function checkRanks(group: ProcessGroup, model: LlamaModel, data: TrainData, o: TrainOptions): Promise<void> {
  const { distributed: _d, onStep: _s, outDir: _o, tensorboard: _t, ...settings } = o;
  const mine = {
    model: modelHash(model),
    config: hashString(stableJson(settings)).toString(16),
    data: hashString(stableJson([data.newTrain, data.flashbacks ?? [], data.replay ?? []])).toString(16),
  };
  const all = (await group.exchange('train-check', JSON.stringify({ ...mine, settings: stableJson(settings) }))).map((s) => JSON.parse(s) as typeof mine & { settings: string });
  for (const [r, theirs] of all.entries()) {
    for (const what of ['model', 'data', 'config'] as const) {
      if (theirs[what] === all[0]![what]) continue;
      let detail = `${all[0]![what]} vs ${theirs[what]}`;
      if (what === 'config') {
        const a = JSON.parse(all[0]!.settings) as Record<string, unknown>;
        const b = JSON.parse(theirs.settings) as Record<string, unknown>;
        const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].filter((k) => stableJson(a[k]) !== stableJson(b[k]));
        detail = keys.map((k) => `${k} ${stableJson(a[k])} vs ${stableJson(b[k])}`).join(', ');
      }
      throw new DistributedError(`train: rank ${r}'s ${what} differs from rank 0's (${detail}); every rank must train the same model on the same data with the same settings`);
    }
  }
}

/** Where a resumed run starts: the checkpoint's folder (rank 0 alone has it), step and stream position. */
export interface ResumePoint {
  dir?: string;
  step: number;
  position?: StreamPosition;
}

/**
 * On resume, rank 0 alone reads the checkpoint, so each host may have its own outDir and only rank
 * 0's needs one: its step and stream position reach the other ranks through the store, its tensors
 * by the broadcasts that start every run. A rank 0 that cannot resume stops every rank with its reason.
 */
export async function resumePoint(group: ProcessGroup, find: () => ResumePoint): Promise<ResumePoint> {
  let found: ResumePoint | undefined;
  let failure: unknown;
  if (group.rank === 0) {
    try {
      found = find();
    } catch (e) {
      failure = e;
    }
  }
  const mine = group.rank !== 0 ? '' : JSON.stringify(found ? { step: found.step, position: found.position } : { error: failure instanceof Error ? failure.message : String(failure) });
  const [zero] = await group.exchange('resume', mine);
  if (group.rank === 0) {
    if (!found) throw failure;
    return found;
  }
  const got = JSON.parse(zero!) as { step?: number; position?: StreamPosition; error?: string };
  if (got.error !== undefined) throw new CheckpointError(`train: rank 0 cannot resume: ${got.error}`);
  return { step: got.step!, ...(got.position ? { position: got.position } : {}) };
}

/** Rank 0's retrieval (k-means and FAISS ran there alone) to the other ranks. */
export async function sendLatent(retrieved: RunLatent['retrieved'], group: ProcessGroup): Promise<void> {
  const ts = [retrieved.new.indices, retrieved.new.weights, retrieved.flash.indices, retrieved.flash.weights].map((a) => tensor(a, [a.length]));
  try {
    await group.broadcast(ts, 0);
  } finally {
    ts.forEach((t) => t.dispose());
  }
}

/** A rank other than 0: the pool's tasks built from the same seed (so the same shapes), its retrieval from rank 0. */
export async function receiveLatent(model: LlamaModel, plan: RunPlan, group: ProcessGroup): Promise<RunLatent> {
  const tasks = latentTasksFor(model, plan);
  const k = tasks.k;
  const ts = [
    zeros([plan.stream.length * k], 'int64'),
    zeros([plan.stream.length * k]),
    zeros([plan.flashbacks.length * k], 'int64'),
    zeros([plan.flashbacks.length * k]),
  ];
  try {
    await group.broadcast(ts, 0);
    const arr = ts.map((t) => t.toTypedArray());
    const retrieved = {
      new: { indices: arr[0] as BigInt64Array, weights: arr[1] as Float32Array },
      flash: { indices: arr[2] as BigInt64Array, weights: arr[3] as Float32Array },
    };
    return { pool: attachPool(model, plan, tasks), retrieved };
  } finally {
    ts.forEach((t) => t.dispose());
  }
}

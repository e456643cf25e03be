// A run's micro-batches: new-task records in a per-epoch shuffled order, flashback prompts in fixed
// micro-batches visited in turn with their reference outputs kept, each with its latent tasks; in a
// data-parallel run, this rank's rows of each, weighted by its share of the tokens.
import { createRng, hashString } from '../data/rng.js';
import { type InstanceRecord } from '../data/records.js';
import { type LlamaModel } from '../model/llama.js';
import { type Tokenizer } from '../model/tokenizer.js';
import { type Tensor, zeros } from '../tensor.js';
import { type Shard, shardOf } from './data-parallel.js';
import { promptBatch, promptText, sftBatch } from './examples.js';
import { type RunPlan } from './plan.js';
import { type LatentPool } from './pool.js';
import { type Retrieved, type RunLatent, select, toArrays } from './retrieval.js';
import { type MicroBatch } from './step.js';
import { type StreamedRecords } from './streamed.js';

const REFERENCE_CACHE_BYTES = 1 << 30;

/** A run's flashback micro-batches. */
export interface FlashbackSource {
  /** flashback micro-batch f of `step`: its rows, tensors, kept reference and data-parallel weight */
  batch(step: number, f: number): {
    rows: number[];
    ids: Tensor;
    attentionMask: Tensor;
    reference: { referenceLogits?: Tensor; referenceHidden?: Tensor };
    weight?: number;
  };
  /** frees the kept reference outputs */
  dispose(): void;
}


/**
 * What of the frozen reference to keep for `tokens` flashback tokens in all: its logits when they
 * fit in 1 GiB (the reference then costs nothing per step), else its final hidden states when those
 * fit (the LM head still runs on them), else nothing (recomputed every step).
 * @param model - the model being trained.
 * @param tokens - flashback tokens in all (rows x width of every flashback micro-batch).
 * @returns 'logits', 'hidden', or undefined (keep nothing).
 * @example
 * ```ts
 * referenceKeeping(model, 160 * 64); // 'logits' for a small vocabulary
 * ```
 */
export function referenceKeeping(model: LlamaModel, tokens: number): 'logits' | 'hidden' | undefined {
  const { vocabSize, hiddenSize } = model.config;
  if (tokens * vocabSize * 4 <= REFERENCE_CACHE_BYTES) return 'logits';
  if (tokens * hiddenSize * 4 <= REFERENCE_CACHE_BYTES) return 'hidden';
  return undefined;
}

/**
 * The reference's logits or final hidden states for these ids: by default the model with adapters
 * and latent tasks off; `model` as it is now with `{ adapters: true }` (and a round's `latent`
 * increments) when a continued run keeps the previous round's model before folding its adapter.
 * @param model - the model being trained.
 * @param kind - what to keep, as {@link referenceKeeping} chose.
 * @param ids - a flashback micro-batch's ids (b, t).
 * @param attentionMask - its mask (b, t).
 * @param current - adapters on (and latent increments) to keep the model as it is now, for a continued run.
 * @returns logits (b, t, vocab) or hidden states (b, t, hidden), to pass as the micro-batch's referenceLogits or referenceHidden.
 * @throws the errors of {@link LlamaModel.logits}.
 * @example
 * ```ts
 * const f = promptBatch(tokenizer, flashbacks, 256);
 * const referenceLogits = keepReference(model, 'logits', f.ids, f.attentionMask);
 * ```
 */
export function keepReference(
  model: LlamaModel,
  kind: 'logits' | 'hidden',
  ids: Tensor,
  attentionMask: Tensor,
  current: { adapters?: boolean; latent?: { indices: Tensor; weights: Tensor } } = {},
): Tensor {
  const options = { attentionMask, adapters: current.adapters ?? false, latent: current.latent };
  const kept = kind === 'logits' ? model.logits(ids, options) : model.hiddenStates(ids, options);
  // Detached: with the adapters on, the forward recorded a graph the kept tensor must not hold.
  const values = kept.detach();
  kept.dispose();
  return values;
}

/**
 * Flashbacks come in fixed micro-batches, visited in turn. The reference's logits (or final hidden
 * states) of each are computed once and kept: the base model never changes.
 */
export function flashbackSource(model: LlamaModel, tokenizer: Tokenizer, plan: RunPlan, previous?: { pool?: LatentPool }, shard?: Shard): FlashbackSource {
  const batches: number[][] = [];
  if (plan.flashbackMicro > 0) {
    const shuffled = createRng(hashString(`${plan.seed}:flash`)).shuffle(plan.flashbacks.map((_, i) => i));
    for (let i = 0; i < shuffled.length; i += plan.microBatch) batches.push(shuffled.slice(i, i + plan.microBatch));
  }
  const keep = plan.cacheReference ? referenceKeeping(model, plan.flashbacks.length * plan.maxTokens) : undefined;
  const cache = new Map<number, Tensor>();
  if (previous && batches.length > 0) {
    // A continued run: the model is now the previous round's (its adapter on, its pool attached).
    // Every flashback micro-batch's reference is kept before that adapter is folded beneath the new one.
    if (!keep) {
      if (previous.pool)
        throw new Error(`train: continuing a run with a 'retrieve' latent pool needs the reference kept (cacheReference, and ${plan.flashbacks.length} flashbacks x ${plan.maxTokens} tokens within 1 GiB of hidden states)`);
    } else {
      const retrieved = previous.pool && toArrays(previous.pool.retrieve(model, tokenizer, plan.flashbacks));
      batches.forEach((rows, which) => {
        const b = promptBatch(tokenizer, rows.map((i) => plan.flashbacks[i]!), plan.maxTokens);
        const latent = retrieved && select(retrieved, rows, previous.pool!.tasks.k);
        try {
          cache.set(which, keepReference(model, keep, b.ids, b.attentionMask, { adapters: true, latent }));
        } finally {
          for (const t of [b.ids, b.attentionMask, latent?.indices, latent?.weights]) t?.dispose();
        }
      });
    }
  }
  return {
    batch(step: number, f: number) {
      const which = (step * plan.flashbackMicro + f) % batches.length;
      const all = batches[which]!;
      const rows = shard ? shardOf(all, shard) : all;
      // A shard's divergence weighs its real tokens over the whole micro-batch's (mean reduction).
      let weight: number | undefined;
      if (shard) {
        const whole = all.reduce((n, i) => n + tokenizer.encode(promptText(plan.flashbacks[i]!)).slice(0, plan.maxTokens).length, 0);
        const mine = rows.reduce((n, i) => n + tokenizer.encode(promptText(plan.flashbacks[i]!)).slice(0, plan.maxTokens).length, 0);
        weight = plan.loss.reduction === 'sum' ? 1 : whole ? mine / whole : 0;
      }
      if (rows.length === 0) return { rows, ...emptyBatch(), reference: {}, weight };
      const b = promptBatch(tokenizer, rows.map((i) => plan.flashbacks[i]!), plan.maxTokens);
      let kept = cache.get(which);
      if (!kept && keep) {
        kept = keepReference(model, keep, b.ids, b.attentionMask);
        cache.set(which, kept);
      }
      const reference = keep === 'logits' ? { referenceLogits: kept } : { referenceHidden: kept };
      return { rows, ids: b.ids, attentionMask: b.attentionMask, reference, weight };
    },
    dispose: () => cache.forEach((t) => t.dispose()),
  };
}

/** A step's micro-batches and the tokens they hold. */
export interface StepBatches {
  micro: MicroBatch[];
  tokens: number;
}

/**
 * A step's micro-batches: new-task records in a per-epoch shuffled order, then flashback
 * micro-batches in turn, each with its latent tasks unless latent dropout drew otherwise.
 */
export function batchMaker(
  tokenizer: Tokenizer,
  plan: RunPlan,
  flash: FlashbackSource,
  latent: RunLatent | undefined,
  shard?: Shard,
): (step: number) => StepBatches {
  let cached = { epoch: -1, order: [] as number[] };
  const build = stepBuilder(tokenizer, plan, flash, latent, shard);
  return (step) => {
    const epoch = Math.floor(step / plan.stepsPerEpoch);
    if (epoch !== cached.epoch) cached = { epoch, order: createRng(hashString(`${plan.seed}:order:${epoch}`)).shuffle(plan.stream.map((_, i) => i)) };
    const start = (step % plan.stepsPerEpoch) * plan.microBatch * plan.accumulation;
    const idx = cached.order.slice(start, start + plan.microBatch * plan.accumulation);
    return build(step, idx.map((i) => plan.stream[i]!), idx);
  };
}

/**
 * A streamed run's step micro-batches: the step's records as `records` hands them out (a window at a
 * time), cut and sharded as an array run's. Streamed runs have no latent tasks.
 */
export function streamBatchMaker(tokenizer: Tokenizer, plan: RunPlan, flash: FlashbackSource, records: StreamedRecords, shard?: Shard): (step: number) => Promise<StepBatches> {
  const build = stepBuilder(tokenizer, plan, flash, undefined, shard);
  return async (step) => build(step, await records.take(plan.microBatch * plan.accumulation));
}

/**
 * Builds step `step` from its new-task records (and their indices in plan.stream, which select their
 * latent tasks): micro-batches of plan.microBatch records, then the flashback micro-batches.
 */
function stepBuilder(tokenizer: Tokenizer, plan: RunPlan, flash: FlashbackSource, latent: RunLatent | undefined, shard?: Shard) {
  return (step: number, records: InstanceRecord[], indices?: number[]): StepBatches => {
    // Latent dropout: one draw per micro-batch, in order, from this step's own stream.
    const dropRng = plan.latentRun.dropout > 0 ? createRng(hashString(`${plan.seed}:latent-dropout:${step}`)) : undefined;
    const increments = (r: Retrieved | undefined, rows: number[] | undefined) =>
      r && rows && !(dropRng && dropRng.next() < plan.latentRun.dropout) ? select(r, rows, latent!.pool.tasks.k) : undefined;
    const micro: MicroBatch[] = [];
    let tokens = 0;
    for (let m = 0; m < plan.accumulation; m++) {
      const rows = records.slice(m * plan.microBatch, (m + 1) * plan.microBatch);
      const idx = indices?.slice(m * plan.microBatch, (m + 1) * plan.microBatch);
      if (rows.length === 0) break;
      if (!shard) {
        const b = sftBatch(tokenizer, rows, plan.maxTokens);
        tokens += b.tokens;
        micro.push({ kind: 'new', ids: b.ids, attentionMask: b.attentionMask, targets: b.targets, latent: increments(latent?.retrieved.new, idx) });
        continue;
      }
      // This rank's rows; its loss weighs its target tokens over the whole micro-batch's (the SFT
      // loss is a token mean), so the ranks' gradients sum to the whole micro-batch's.
      const whole = sftTokens(tokenizer, rows, plan.maxTokens);
      const mine = shardOf(rows.map((_, j) => j), shard);
      const b = mine.length ? sftBatch(tokenizer, mine.map((j) => rows[j]!), plan.maxTokens) : emptyBatch();
      tokens += whole;
      micro.push({ kind: 'new', ids: b.ids, attentionMask: b.attentionMask, targets: b.targets, latent: increments(latent?.retrieved.new, idx && mine.map((j) => idx[j]!)), weight: whole ? b.tokens / whole : 0 });
    }
    for (let f = 0; f < plan.flashbackMicro; f++) {
      const b = flash.batch(step, f);
      micro.push({ kind: 'flashback', ids: b.ids, attentionMask: b.attentionMask, ...b.reference, latent: increments(latent?.retrieved.flash, b.rows), weight: b.weight });
    }
    return { micro, tokens };
  };
}

/** Target tokens of a whole micro-batch of these records, as sftBatch counts them. */
function sftTokens(tokenizer: Tokenizer, records: InstanceRecord[], maxTokens: number): number {
  const b = sftBatch(tokenizer, records, maxTokens);
  for (const t of [b.ids, b.attentionMask, b.targets]) t.dispose();
  return b.tokens;
}

/** A micro-batch of no rows: this rank's shard is empty, it still takes part in the all-reduce. */
function emptyBatch(): { ids: Tensor; attentionMask: Tensor; targets: Tensor; tokens: number } {
  return { ids: zeros([0, 1], 'int64'), attentionMask: zeros([0, 1], 'uint8'), targets: zeros([0, 1], 'int64'), tokens: 0 };
}

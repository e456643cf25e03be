// Continual rounds without replay: round n+1 trains a fresh adapter on the model after round n.
// A run folder (`train({ outDir })`, `jfa train --out`) records what lies beneath its adapter in
// continual.json (the base model and the earlier rounds' adapters, copied into the run), so a
// later round can rebuild the model after this one from the folder alone: the base, then each
// round's adapter merged into the weights ('merge') or kept frozen beneath them ('stack').
// This file also holds the flashback budget across rounds and the continual-learning metrics.
import { closeSync, copyFileSync, existsSync, mkdirSync, openSync, readSync, realpathSync } from 'node:fs';
import { basename, dirname, join, relative, resolve } from 'node:path';

import { z } from 'zod';

import { readJsonl, writeJsonl } from '../data/jsonl.js';
import { type FlashbackRecord, type InstanceRecord, toFlashback } from '../data/records.js';
import { createRng, hashString } from '../data/rng.js';
import { type LlamaModel } from '../model/llama.js';
import { readJson, writeFileAtomic } from '../util/files.js';
import { findLatentPool } from './pool.js';

/**
 * How a finished round's adapter lies beneath the next one. 'merge': folded into the base weights
 * (W += scale B A), then dropped; 'stack': kept frozen, applied as its own low-rank product in
 * every forward pass. Both make the same function up to float rounding; see
 * docs/training.md, "Continual rounds", for the measurement that chose the default.
 */
export const CONTINUE_MODES = ['merge', 'stack'] as const;
/** One of {@link CONTINUE_MODES}: how a finished round's adapter lies beneath the next one. */
export type ContinueMode = (typeof CONTINUE_MODES)[number];
/** The mode a round continues with when none is given, and that a run without a recorded mode is served with: 'merge'. */
export const DEFAULT_CONTINUE_MODE: ContinueMode = 'merge';

/** A run folder's record of the rounds beneath its adapter. */
export const CONTINUAL_FILE = 'continual.json';
/** A run folder's sample of its new-task prompts: flashbacks for later rounds. */
export const PROMPTS_FILE = 'prompts.jsonl';
/** How many of a round's new-task prompts its run folder keeps for later rounds. */
export const PROMPTS_KEPT = 1024;

/** A run folder's continual.json: the base model and the earlier rounds beneath its adapter. */
export interface ContinualChain {
  /** the file format's version, 1 */
  version: 1;
  /** the base model directory the first round started from (absolute), or null when unknown */
  base: string | null;
  /** how the earlier rounds are folded beneath the run's adapter */
  mode: ContinueMode;
  /** the earlier rounds, oldest first: their adapter directories and prompt files, relative to the run */
  rounds: Array<{
    /** the round's adapter directory, relative to the run folder */
    adapter: string;
    /** the round's prompts.jsonl, relative to the run folder */
    prompts: string;
  }>;
}

// Every field checked, unknown fields rejected; typed by ContinualChain, which it must produce.
const chainSchema: z.ZodType<ContinualChain> = z
  .object({
    version: z.literal(1),
    base: z.string().nullable(),
    mode: z.enum(CONTINUE_MODES),
    rounds: z.array(z.object({ adapter: z.string(), prompts: z.string() }).strict()),
  })
  .strict();

/** One finished round of a run folder, with absolute paths. */
export interface RoundFiles {
  /** the round's adapter directory (a PEFT LoRA adapter) */
  adapter: string;
  /** the round's kept new-task prompts (prompts.jsonl), flashbacks for later rounds */
  prompts: string;
}

/** What a run folder holds for a round that continues from it. */
export interface PreviousRun {
  /** the run folder (absolute) */
  run: string;
  /** the base model the rounds started from, when recorded */
  base: string | null;
  /** the mode the run's own earlier rounds were folded with (undefined when it has none) */
  mode?: ContinueMode;
  /** every finished round, oldest first; the last is the run's own */
  rounds: RoundFiles[];
  /** the run's latent pool file, when it serves with one ('retrieve'): part of the model after the round */
  pool?: string;
}

/**
 * Reads a finished run folder (`jfa train --out`): its adapter, its prompt sample and the chain of
 * earlier rounds beneath it.
 * @param run - the folder a previous `train({ outDir })` finished in.
 * @returns the run's folder, base model, mode and every finished round (its own last), all paths
 *   absolute, and its latent pool file when it serves with one ('retrieve').
 * @throws Error naming the folder or file when the run is unfinished (no adapter/adapter_config.json
 *   or prompts.jsonl), its continual.json is malformed, an earlier round's files are missing, or its
 *   latent pool file is not a safetensors file.
 * @example
 * ```ts
 * const prev = readRun('runs/round-1');
 * prev.rounds.at(-1)!.adapter; // '/abs/path/runs/round-1/adapter'
 * ```
 */
export function readRun(run: string): PreviousRun {
  const dir = resolve(run);
  const adapter = join(dir, 'adapter');
  if (!existsSync(join(adapter, 'adapter_config.json')))
    throw new Error(`continueFrom: ${dir} is not a finished run (no adapter/adapter_config.json; a killed run resumes with --resume first)`);
  const prompts = join(dir, PROMPTS_FILE);
  if (!existsSync(prompts)) throw new Error(`continueFrom: ${dir} has no ${PROMPTS_FILE} (made by jfa-torch's train since continual rounds; train it again)`);
  const chainFile = join(dir, CONTINUAL_FILE);
  let chain: ContinualChain | undefined;
  if (existsSync(chainFile)) {
    const parsed = chainSchema.safeParse(readJson(chainFile));
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      throw new Error(`${chainFile}: ${issue.path.length ? `field '${issue.path.join('.')}'` : 'the file'}: ${issue.message}`);
    }
    chain = parsed.data;
  }
  const earlier = (chain?.rounds ?? []).map((r, i) => {
    const files = { adapter: resolve(dir, r.adapter), prompts: resolve(dir, r.prompts) };
    for (const f of [join(files.adapter, 'adapter_config.json'), files.prompts])
      if (!existsSync(f)) throw new Error(`${chainFile}: round ${i + 1}'s ${f} is missing`);
    return files;
  });
  const base = chain ? chain.base : (readJson<{ base_model_name_or_path?: string | null }>(join(adapter, 'adapter_config.json')).base_model_name_or_path ?? null);
  const poolFile = findLatentPool(adapter);
  const pool = poolFile && poolMode(poolFile) === 'retrieve' ? poolFile : undefined;
  return { run: dir, base, mode: chain?.rounds.length ? chain.mode : undefined, rounds: [...earlier, { adapter, prompts }], ...(pool ? { pool } : {}) };
}

/**
 * The latent mode ('retrieve' or 'drop') a latent pool file records, read from its header only.
 * @param file - a latent_pool.safetensors.
 * @returns the mode, or undefined when the header records none.
 * @throws Error naming the file when it is not a safetensors file.
 * @example
 * ```ts
 * poolMode('runs/jfa/adapter/latent_pool.safetensors'); // 'retrieve'
 * ```
 */
export function poolMode(file: string): string | undefined {
  const header = readHeader(file);
  try {
    return (JSON.parse(header.__metadata__?.pool ?? '{}') as { mode?: string }).mode;
  } catch {
    return undefined;
  }
}

function readHeader(file: string): { __metadata__?: Record<string, string> } {
  // safetensors: an 8-byte little-endian length, then that many bytes of JSON.
  const fd = openSync(file, 'r');
  try {
    const len = Buffer.alloc(8);
    readSync(fd, len, 0, 8, 0);
    const n = Number(len.readBigUInt64LE(0));
    if (!(n > 0 && n < 1 << 26)) throw new Error(`${file}: not a safetensors file (header length ${n})`);
    const text = Buffer.alloc(n);
    readSync(fd, text, 0, n, 8);
    return JSON.parse(text.toString('utf8')) as { __metadata__?: Record<string, string> };
  } finally {
    closeSync(fd);
  }
}

/**
 * Checks that `model` is a clean base for continuing `prev` (no adapters, nothing stacked, the
 * recorded base when both are known) and that `mode` agrees with the run's earlier rounds.
 * @throws Error naming the model directories or modes that disagree
 */
export function checkContinue(model: LlamaModel, prev: PreviousRun, mode: ContinueMode): void {
  const params = model.loraParameters();
  const adapted = Object.keys(params).length > 0;
  Object.values(params).forEach((t) => t.dispose());
  if (adapted || model.stackedAdapters > 0)
    throw new Error('continueFrom: the model already has adapters; pass the base model as loaded from its directory');
  if (prev.mode && prev.mode !== mode)
    throw new Error(`continueFrom: ${prev.run} folded its earlier rounds with '${prev.mode}', this round asks for '${mode}'; one chain uses one mode`);
  if (prev.base && model.dir && existsSync(prev.base) && realpathSync(prev.base) !== realpathSync(model.dir))
    throw new Error(`continueFrom: ${prev.run} was trained on the base ${prev.base}, but the model given is ${model.dir}`);
}

/**
 * Loads the finished rounds of `prev` into `model`: every round but the last folded with `mode`,
 * the last one's adapter loaded and active. The model is then exactly the one `prev` produced
 * (without its latent pool, which the caller attaches). `foldLast()` then folds that adapter too.
 * @param model - a clean base model (see checkContinue).
 * @param prev - the run to continue, as {@link readRun} returns it.
 * @param mode - how to fold the rounds beneath the last: 'merge' or 'stack'.
 * @returns `foldLast`, which folds the last round's adapter with `mode`, so a new adapter can go on top.
 * @throws Error as loadAdapter does, naming the file of an adapter that cannot be loaded.
 * @example
 * ```ts
 * const { foldLast } = loadRounds(model, readRun('runs/round-1'), 'merge');
 * foldLast(); // the model after round 1, ready for round 2's adapter
 * ```
 */
export function loadRounds(
  model: LlamaModel,
  prev: PreviousRun,
  mode: ContinueMode,
): {
  /** folds the last round's adapter into the model with `mode`, as the earlier ones were */
  foldLast: () => void;
} {
  const fold = () => (mode === 'merge' ? model.mergeLora() : model.stackLora());
  prev.rounds.forEach((r, i) => {
    model.loadAdapter(r.adapter);
    if (i < prev.rounds.length - 1) fold();
  });
  return { foldLast: fold };
}

/**
 * Loads an adapter directory into `model`, with the earlier rounds beneath it when the directory is
 * the `adapter/` of a continued run (its folder's continual.json lists them): the model after that
 * run, as `jfa eval` and `jfa generate --adapter` serve it.
 * @param model - the base model the run started from, without adapters.
 * @param adapterDir - a PEFT LoRA adapter directory, e.g. a run folder's `adapter/`.
 * @returns how many earlier rounds it folded beneath the adapter (0 for a plain adapter).
 * @throws Error as loadAdapter does, or as {@link readRun} does for the run folder's malformed or missing files.
 * @example
 * ```ts
 * const earlier = loadAdapterWithRounds(model, 'runs/round-2/adapter'); // 1: round 1 beneath round 2
 * ```
 */
export function loadAdapterWithRounds(model: LlamaModel, adapterDir: string): number {
  const run = dirname(resolve(adapterDir));
  if (basename(resolve(adapterDir)) !== 'adapter' || !existsSync(join(run, CONTINUAL_FILE)) || !existsSync(join(run, PROMPTS_FILE))) {
    model.loadAdapter(adapterDir);
    return 0;
  }
  const prev = readRun(run);
  loadRounds(model, prev, prev.mode ?? DEFAULT_CONTINUE_MODE);
  return prev.rounds.length - 1;
}

/** Each earlier round's kept prompts, oldest first. */
export function earlierPrompts(prev: PreviousRun): FlashbackRecord[][] {
  return prev.rounds.map((r) => readJsonl(r.prompts, 'flashback'));
}

/**
 * Writes `<outDir>/continual.json` and copies the earlier rounds' adapters and prompt files into
 * `<outDir>/rounds/<i>/`, so the folder stands alone as the model after this round (with its own
 * `adapter/`). A round with no predecessor writes a chain with no earlier rounds.
 */
export function writeChain(outDir: string, base: string | null, mode: ContinueMode, prev?: PreviousRun): void {
  const rounds = (prev?.rounds ?? []).map((r, i) => {
    const dir = join(outDir, 'rounds', String(i + 1));
    const adapter = join(dir, 'adapter');
    mkdirSync(adapter, { recursive: true });
    for (const f of ['adapter_config.json', 'adapter_model.safetensors']) copyFileSync(join(r.adapter, f), join(adapter, f));
    copyFileSync(r.prompts, join(dir, PROMPTS_FILE));
    return { adapter: relative(outDir, adapter), prompts: relative(outDir, join(dir, PROMPTS_FILE)) };
  });
  const chain: ContinualChain = { version: 1, base, mode, rounds };
  writeFileAtomic(join(outDir, CONTINUAL_FILE), `${JSON.stringify(chain, null, 2)}\n`);
}

/** A seeded sample of up to PROMPTS_KEPT of a round's new-task prompts, as flashback records. */
export function writePrompts(outDir: string, records: InstanceRecord[], seed: number): void {
  const kept = records.length <= PROMPTS_KEPT ? records : createRng(hashString(`${seed}:prompts`)).sample(records, PROMPTS_KEPT);
  writeJsonl(join(outDir, PROMPTS_FILE), kept.map(toFlashback));
}

/**
 * The flashbacks of a round: the old suites' flashbacks plus prompts of every earlier round's new
 * tasks, `budget` in all. Every source (each old suite, by its records' `task`, and each earlier
 * round) gets an equal share; a source with fewer records than its share gives the rest to the
 * others; shares that do not divide evenly go to the first sources. Each source's records are a
 * seeded sample, in the sources' order: the same inputs and seed give the same list.
 * @param old - the old suites' flashbacks.
 * @param earlier - each earlier round's prompts, oldest first.
 * @param budget - how many flashbacks in all (a non-negative integer).
 * @param seed - seeds each source's sample.
 * @returns the flashbacks, source by source: `budget` of them, or every record when there are fewer.
 * @throws RangeError for a budget that is not a non-negative integer.
 * @example
 * ```ts
 * const fb160 = readJsonl('fb160.jsonl', 'flashback'), round1Prompts = readJsonl('runs/round-1/prompts.jsonl', 'flashback');
 * accumulateFlashbacks(fb160, [round1Prompts], 160, 1); // 5 suites + 1 round: 27, 27, 27, 27, 26 and 26
 * ```
 */
export function accumulateFlashbacks(old: FlashbackRecord[], earlier: FlashbackRecord[][], budget: number, seed: number): FlashbackRecord[] {
  if (!Number.isInteger(budget) || budget < 0) throw new RangeError(`accumulateFlashbacks: budget must be a non-negative integer, got ${budget}`);
  const suites = new Map<string, FlashbackRecord[]>();
  for (const f of old) suites.set(f.task, [...(suites.get(f.task) ?? []), f]);
  const sources = [...[...suites.entries()].map(([task, records]) => ({ label: `suite:${task}`, records })), ...earlier.map((records, i) => ({ label: `round:${i + 1}`, records }))];
  const quota = sources.map(() => 0);
  let open = sources.map((_, i) => i).filter((i) => sources[i]!.records.length > 0);
  let left = Math.min(budget, sources.reduce((s, x) => s + x.records.length, 0));
  // Water-filling: equal shares, small sources take what they have, the rest is shared again.
  while (left > 0 && open.length > 0) {
    const share = Math.floor(left / open.length);
    const extra = left % open.length;
    const want = open.map((i, k) => share + (k < extra ? 1 : 0));
    const short = open.filter((i, k) => sources[i]!.records.length - quota[i]! < want[k]!);
    if (short.length === 0) {
      open.forEach((i, k) => (quota[i]! += want[k]!));
      break;
    }
    for (const i of short) {
      left -= sources[i]!.records.length - quota[i]!;
      quota[i] = sources[i]!.records.length;
    }
    open = open.filter((i) => !short.includes(i));
  }
  return sources.flatMap((s, i) => createRng(hashString(`${seed}:flashbacks:${s.label}`)).sample(s.records, quota[i]!));
}

/** A continual run's matrix and what the literature reports from it. */
export interface ContinualMetrics {
  /** backward transfer: mean over j < T of R[T][j] - R[j][j] (negative: forgetting) */
  bwt: number;
  /** mean over j < T of max over l in [j, T) of R[l][j] - R[T][j] */
  forgetting: number;
  /** per earlier round j: R[j][j], the best before the last round, and R[T][j] */
  perRound: Array<{
    /** the round j, from 1 */
    round: number;
    /** R[j][j]: the score on round j's tasks right after training round j */
    learned: number;
    /** the best score on round j's tasks after rounds j to T-1 */
    best: number;
    /** R[T][j]: the score on round j's tasks after the last round */
    final: number;
    /** best - final */
    forgetting: number;
  }>;
}

/**
 * Backward transfer (Lopez-Paz & Ranzato 2017) and forgetting (Chaudhry et al. 2018) of an
 * accuracy matrix, rounds numbered from 1 as in the papers: R[i][j] is the score on round j's
 * tasks after training round i (0-based here: R[i-1][j-1]); entries above the diagonal are unused.
 * With T rounds:
 *   BWT = 1/(T-1) * sum_{j=1}^{T-1} (R[T][j] - R[j][j])
 *   F   = 1/(T-1) * sum_{j=1}^{T-1} max_{l=j}^{T-1} (R[l][j] - R[T][j])
 * @param R - a T x T matrix (T >= 2) with a finite number at every entry on or below the diagonal.
 * @returns BWT, forgetting, and each earlier round's learned, best and final scores.
 * @throws RangeError for fewer than 2 rounds, a row of the wrong length, or a missing or non-finite entry, naming it.
 * @example
 * ```ts
 * continualMetrics([[0.5, null], [0.3, 0.6]]); // { bwt: -0.2, forgetting: 0.2, perRound: [...] }
 * ```
 */
export function continualMetrics(R: ReadonlyArray<ReadonlyArray<number | null>>): ContinualMetrics {
  const T = R.length;
  if (T < 2) throw new RangeError(`continualMetrics: BWT and forgetting need at least 2 rounds, got ${T}`);
  const at = (i: number, j: number): number => {
    const v = R[i]?.[j];
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new RangeError(`continualMetrics: R[${i}][${j}] (after round ${i + 1}, on round ${j + 1}'s tasks) must be a finite number, got ${JSON.stringify(v)}`);
    return v;
  };
  R.forEach((row, i) => {
    if (!Array.isArray(row) || row.length !== T) throw new RangeError(`continualMetrics: row ${i} must have ${T} entries, got ${Array.isArray(row) ? row.length : typeof row}`);
  });
  const perRound = Array.from({ length: T - 1 }, (_, j) => {
    const final = at(T - 1, j);
    const learned = at(j, j);
    let best = -Infinity;
    for (let l = j; l < T - 1; l++) best = Math.max(best, at(l, j));
    return { round: j + 1, learned, best, final, forgetting: best - final };
  });
  const mean = (xs: number[]) => xs.reduce((s, x) => s + x, 0) / xs.length;
  return { bwt: mean(perRound.map((p) => p.final - p.learned)), forgetting: mean(perRound.map((p) => p.forgetting)), perRound };
}

/**
 * Forgetting of a column measured before the first round too (the old suites): `scores[0]` before
 * any round (the base), `scores[i]` after round i; max_{l < last} scores[l] - scores[last].
 * @param scores - the column's scores, the base's first, then one after each round.
 * @returns the best score before the last minus the last (negative when the last is the best).
 * @throws RangeError for fewer than 2 scores or a non-finite one.
 * @example
 * ```ts
 * columnForgetting([0.5, 0.75, 0.25]); // 0.5
 * ```
 */
export function columnForgetting(scores: readonly number[]): number {
  if (scores.length < 2 || scores.some((s) => !Number.isFinite(s))) throw new RangeError(`columnForgetting: needs at least 2 finite scores, got ${JSON.stringify(scores)}`);
  return Math.max(...scores.slice(0, -1)) - scores[scores.length - 1]!;
}

// Flashbacks from old-task files: a seeded sample of distinct prompts from every suite.
import type { FlashbackRecord, InstanceRecord } from '../records.js';
import { toFlashback } from '../records.js';
import { createRng } from '../rng.js';

/** Options of {@link drawFlashbacks}. */
export interface FlashbackDrawOptions {
  /** Prompts drawn per suite (the paper: 32 per dataset). */
  perSuite: number;
  /** Seed of the per-suite shuffle (default 0): the same records and seed draw the same prompts. */
  seed?: number;
  /**
   * What a suite is: 'suite' (default) the part of the task name before the first '/', so
   * "mmlu-pro/law" and "mmlu-pro/math" are one suite; 'task' the whole task name.
   */
  by?: 'suite' | 'task';
}

// The prompt text the trainer builds (lib/jfa/examples.ts promptText): two records with the same one are one prompt.
const promptOf = (r: InstanceRecord | FlashbackRecord): string => ('prompt' in r ? r.prompt : `${r.instruction}\n${r.input}\n`);

/**
 * The suite a task belongs to: its name up to the first '/'.
 * @param task - a record's task name.
 * @returns the suite name (the whole name when it has no '/').
 * @example
 * ```ts
 * suiteOf('mmlu-pro/law'); // 'mmlu-pro'
 * suiteOf('gsm8k'); // 'gsm8k'
 * ```
 */
export const suiteOf = (task: string): string => task.split('/')[0]!;

/**
 * Draws `perSuite` flashback prompts from each suite of the records, without targets. Prompts are
 * deduplicated first (same instruction and input: one prompt), then sampled by a seeded shuffle per
 * suite, so the same records and seed always give the same file. Suites come out sorted by name.
 * @param records - old-task records (their outputs are dropped) or flashback records, of any suites.
 * @param o - prompts per suite, the seed, and whether a suite is a name prefix or a whole task.
 * @returns the flashbacks, and one note per suite with fewer distinct prompts than asked (all of them are taken).
 * @throws RangeError when `perSuite` is not a positive integer.
 * @example
 * ```ts
 * const { flashbacks, notes } = drawFlashbacks(importFiles('gsm8k', ['gsm8k-train.jsonl']).records, { perSuite: 32, seed: 1 });
 * writeJsonl('flashbacks.jsonl', flashbacks);
 * ```
 */
export function drawFlashbacks(
  records: readonly (InstanceRecord | FlashbackRecord)[],
  o: FlashbackDrawOptions,
): {
  /** The drawn prompts, suite by suite in name order; a record's `embedding` is kept. */
  flashbacks: FlashbackRecord[];
  /** One line per suite that had fewer distinct prompts than `perSuite`. */
  notes: string[];
} {
  if (!Number.isInteger(o.perSuite) || o.perSuite < 1) throw new RangeError(`perSuite must be a positive integer, got ${o.perSuite}`);
  const groups = new Map<string, Map<string, FlashbackRecord>>();
  for (const r of records) {
    const key = o.by === 'task' ? r.task : suiteOf(r.task);
    const group = groups.get(key) ?? new Map<string, FlashbackRecord>();
    groups.set(key, group);
    const prompt = promptOf(r);
    if (!group.has(prompt)) group.set(prompt, 'output' in r ? { ...toFlashback(r), ...(r.embedding ? { embedding: r.embedding } : {}) } : r);
  }
  const rng = createRng(o.seed ?? 0);
  const notes: string[] = [];
  const flashbacks = [...groups.keys()].sort().flatMap((key) => {
    const pool = [...groups.get(key)!.values()];
    if (pool.length < o.perSuite) notes.push(`${o.by === 'task' ? 'task' : 'suite'} ${key}: ${pool.length} distinct prompts, fewer than ${o.perSuite}; took them all`);
    return rng.fork(key).shuffle(pool).slice(0, o.perSuite);
  });
  return { flashbacks, notes };
}

// Probes: held-out records of the general skills a base must have before LoRA can build on it,
// scored by exact match of greedy generations. Copying and looking up are in-context skills
// (induction): teacher-forced loss can look fine while generation fails wherever the answer has to
// be read out of the prompt, so a base is judged by these, not by its loss.
import type { InstanceRecord } from './records.js';
import { createRng, hashString } from './rng.js';
import { skillRecord } from './skills.js';

/** The probes, each a general skill (skills.ts) scored on fresh records. */
export const PROBES = {
  /** copy a list of words or numbers exactly */
  copy: 'copy-list',
  /** read the values of the asked keys out of a table in the prompt */
  lookup: 'lookup',
  /** the word at a stated position */
  'word-at': 'word-at',
  /** restate a fact, then the letter of the option it names (how multiple-choice answers end) */
  option: 'option-letter',
  /** count the items */
  count: 'count-items',
  /** answer with exactly the label the instruction states */
  format: 'say-label',
  /** copy made-up words: copying any tokens, not only the pool's words */
  'copy-coined': 'copy-coined',
  /** look up made-up keys or values */
  'lookup-coined': 'lookup-coined',
  /** match a fact to made-up options, as knowledge-mc's are */
  'option-coined': 'option-coined',
  /** look up by key or by value in a table of any common shape ('k=v, ...', lines, in the instruction) */
  'lookup-table': 'lookup-table',
} as const;

/** One probe's name. */
export type ProbeName = keyof typeof PROBES;
/** The probes' names, in order. */
export const PROBE_NAMES = Object.keys(PROBES) as ProbeName[];

/** The seed of the probes' records: fixed, so scores compare across bases and runs. */
export const PROBE_SEED = 0x9e0be;

/**
 * `perProbe` records of each probe, the same for the same arguments.
 * @param perProbe - records per probe (a positive integer).
 * @param seed - their seed (default {@link PROBE_SEED}).
 * @returns each probe's records.
 * @throws RangeError for a count that is not a positive integer.
 * @example
 * ```ts
 * const { copy } = probeRecords(50);
 * copy[0]?.instruction; // 'Copy the input exactly.'
 * ```
 */
export function probeRecords(perProbe: number, seed = PROBE_SEED): Record<ProbeName, InstanceRecord[]> {
  if (!Number.isInteger(perProbe) || perProbe < 1) throw new RangeError(`probeRecords: perProbe must be a positive integer, got ${perProbe}`);
  const out = {} as Record<ProbeName, InstanceRecord[]>;
  for (const name of PROBE_NAMES) {
    const rng = createRng(hashString(`${seed}:probe:${name}`));
    out[name] = Array.from({ length: perProbe }, () => skillRecord(PROBES[name], rng));
  }
  return out;
}

// A pretraining stream: fresh generated records for every step, never the same records again. A
// step's records are a pure function of (seed, step), so a run resumed at any step sees exactly
// what an uninterrupted one would, with no order state to save. Records whose prompt is held out
// (old-suite evaluation and flashback prompts, the probes) are never drawn. A step's records are
// drawn independently of each other: batches sorted by length (to save padding) hold one skill
// or one list length each, and measured, a model then learned to copy five times more slowly.
import { OLD_SUITE_NAMES, OLD_SUITES } from './old-tasks.js';
import { type InstanceRecord, promptKey } from './records.js';
import { createRng, hashString, type Rng } from './rng.js';
import { IN_CONTEXT_SKILLS, NAMED_SKILLS, SKILL_NAMES, skillRecord } from './skills.js';

const COPY_SKILLS = ['copy-list', 'copy-words'];

/** What a phase of the stream draws: shares of old-suite records, general skills and in-context skills. */
export interface StreamMix {
  /** share of old-suite records (the five suites in turn) */
  old: number;
  /** share of general-skill records (every skill, uniformly) */
  skills: number;
  /** share of in-context skill records (copy, look up, match: {@link IN_CONTEXT_SKILLS}) */
  inContext: number;
  /** share of plain copying (copy-list, copy-words): the first induction circuit to form */
  copy?: number;
  /** shares of single skills by name (skills.ts), e.g. { lookup: 0.3 } */
  named?: Record<string, number>;
}

/** One phase: `steps` steps drawn from `mix`. */
export interface StreamPhase {
  /** how many steps the phase lasts */
  steps: number;
  /** what its records are drawn from */
  mix: StreamMix;
}

/** Options of {@link createStream}. */
export interface StreamOptions {
  /** the phases, in order; the last one continues past its steps */
  phases: StreamPhase[];
  /** the stream's seed */
  seed: number;
  /** records per step */
  perStep: number;
  /** prompts never to draw ({@link promptKey}) */
  exclude?: ReadonlySet<string>;
}

/** A step-addressed source of training records. */
export interface RecordStream {
  /**
   * The records of step `step` (0-based).
   * @param step - the step.
   * @returns perStep records.
   */
  at(step: number): InstanceRecord[];
}

/**
 * A stream of fresh records per step, phase by phase (a curriculum: in-context skills alone first,
 * say, then the full mixture with them kept in it).
 * @param o - phases, seed, records per step, length sorting and held-out prompts.
 * @returns the stream.
 * @throws RangeError for no phases, a phase of no steps or a mix of no records.
 * @example
 * ```ts
 * const stream = createStream({ seed: 1, perStep: 16, phases: [{ steps: 2000, mix: { old: 0, skills: 0, inContext: 1 } }, { steps: 8000, mix: { old: 0.6, skills: 0.2, inContext: 0.2 } }] });
 * stream.at(0).length; // 16
 * ```
 */
export function createStream(o: StreamOptions): RecordStream {
  if (o.phases.length === 0) throw new RangeError('createStream: no phases');
  for (const p of o.phases) {
    if (!Number.isInteger(p.steps) || p.steps < 0) throw new RangeError(`createStream: a phase's steps must be a non-negative integer, got ${p.steps}`);
    for (const name of Object.keys(p.mix.named ?? {})) if (!NAMED_SKILLS.includes(name)) throw new RangeError(`createStream: unknown skill '${name}' in a phase's mix (known: ${NAMED_SKILLS.join(', ')})`);
    const shares = [p.mix.old, p.mix.skills, p.mix.inContext, p.mix.copy ?? 0, ...Object.values(p.mix.named ?? {})];
    if (!(shares.reduce((a, v) => a + v, 0) > 0) || shares.some((v) => !(v >= 0))) throw new RangeError(`createStream: a phase's mix must be non-negative shares with a positive sum, got ${JSON.stringify(p.mix)}`);
  }
  if (!Number.isInteger(o.perStep) || o.perStep < 1) throw new RangeError(`createStream: perStep must be a positive integer, got ${o.perStep}`);
  const phaseOf = (step: number): StreamPhase => {
    let end = 0;
    for (const p of o.phases) {
      end += p.steps;
      if (step < end) return p;
    }
    return o.phases[o.phases.length - 1]!;
  };
  // A mix as cumulative shares over its sources, each a way to draw one record.
  const sourcesOf = (mix: StreamMix): { upTo: number; draw: (rng: Rng) => InstanceRecord }[] => {
    const skillOf = (names: readonly string[]) => (rng: Rng) => skillRecord(rng.pick(names), rng);
    const parts: [number, (rng: Rng) => InstanceRecord][] = [
      [mix.old, (rng) => OLD_SUITES[rng.pick(OLD_SUITE_NAMES)](rng, 1)[0]!],
      [mix.skills, skillOf(SKILL_NAMES)],
      [mix.inContext, skillOf(IN_CONTEXT_SKILLS)],
      [mix.copy ?? 0, skillOf(COPY_SKILLS)],
      ...Object.entries(mix.named ?? {}).map(([name, share]): [number, (rng: Rng) => InstanceRecord] => [share, (rng) => skillRecord(name, rng)]),
    ];
    let upTo = 0;
    return parts.filter(([share]) => share > 0).map(([share, draw]) => ({ upTo: (upTo += share), draw }));
  };
  const sources = new Map(o.phases.map((p) => [p.mix, sourcesOf(p.mix)]));
  const draw = (rng: Rng, mix: StreamMix): InstanceRecord => {
    const from = sources.get(mix)!;
    const total = from[from.length - 1]!.upTo;
    for (;;) {
      const u = rng.next() * total;
      const r = from.find((s) => u < s.upTo)!.draw(rng);
      if (!o.exclude?.has(promptKey(r))) return r;
    }
  };
  return {
    at(step) {
      if (!Number.isInteger(step) || step < 0) throw new RangeError(`stream: step must be a non-negative integer, got ${step}`);
      const rng = createRng(hashString(`${o.seed}:stream:${step}`));
      const mix = phaseOf(step).mix;
      return Array.from({ length: o.perStep }, () => draw(rng, mix));
    },
  };
}

// The generated continual-learning benchmark: old suites (train/eval), flashback prompts drawn from
// them, and new instruction tasks split by task into training and held-out evaluation.
import { join } from 'node:path';

import { writeFileAtomic } from '../util/files.js';
import { writeJsonl } from './jsonl.js';
import { instances, newTasks, splitTasks } from './new-tasks.js';
import { OLD_SUITE_NAMES, OLD_SUITES, type OldSuiteName } from './old-tasks.js';
import type { FlashbackRecord, InstanceRecord, OldRecord } from './records.js';
import { toFlashback } from './records.js';
import { createRng, type Rng } from './rng.js';
import { generalSkills } from './skills.js';

/** Options of {@link generateSuite}: the seed and every size. */
export interface SuiteOptions {
  /** the seed: the same seed gives the same suite */
  seed: number;
  /** Old-task training records per suite (the "old data" that only the Replay baseline may use). */
  oldTrainPerSuite?: number;
  /** Old-task evaluation records per suite (default 100). */
  oldEvalPerSuite?: number;
  /** Flashback prompts per suite (default 32). */
  flashbacksPerSuite?: number;
  /**
   * Flashback prompts per suite to draw samples from (default: flashbacksPerSuite). Disjoint from
   * train and eval; `sampleFlashbacks` takes a seeded sample of it for each run.
   */
  flashbackPoolPerSuite?: number;
  /** General-skill records (skills.ts) for pretraining a base; default none. */
  skills?: number;
  /** Caps on how many tasks to use (default: all of the split). */
  newTrainTasks?: number;
  /** Cap on the held-out tasks (default: all of the split). */
  newEvalTasks?: number;
  /** Training instances per training task (default 20). */
  instancesPerTask?: number;
  /** Evaluation instances per held-out task (default 10). */
  evalInstancesPerTask?: number;
  /** Training tasks to evaluate on fresh instances (seen tasks, unseen inputs); default none. */
  seenEvalTasks?: number;
  /** Salt of the train/test task split; independent of `seed` so the split stays put. */
  splitSalt?: number;
}

/** A generated benchmark: old suites, flashbacks, general skills and new tasks. */
export interface Suite {
  /** the seed it was generated with */
  seed: number;
  /** each old suite's training and evaluation records */
  old: Record<OldSuiteName, { train: OldRecord[]; eval: OldRecord[] }>;
  /** `flashbacksPerSuite` prompts of each suite: the first of its pool. */
  flashbacks: FlashbackRecord[];
  /** every suite's flashback pool, for {@link sampleFlashbacks} */
  flashbackPool: FlashbackRecord[];
  /** General-skill records for pretraining (empty unless asked for). */
  skills: InstanceRecord[];
  /** the training tasks' instances */
  newTrain: InstanceRecord[];
  /** the held-out tasks' instances */
  newEval: InstanceRecord[];
  /** Fresh instances of training tasks (inputs not in newTrain), for seen-task scores. */
  newSeenEval: InstanceRecord[];
  /** names of the training tasks */
  newTrainTaskNames: string[];
  /** names of the held-out tasks */
  newEvalTaskNames: string[];
}

/** Draws `n` records whose inputs are not in `exclude`, so eval and flashback prompts never leak from train. */
function fresh(gen: (rng: Rng, n: number) => OldRecord[], rng: Rng, n: number, exclude: Set<string>): OldRecord[] {
  const out: OldRecord[] = [];
  for (let round = 0; out.length < n && round < 50; round++) {
    for (const r of gen(rng, n - out.length)) {
      if (!exclude.has(r.input)) { exclude.add(r.input); out.push(r); }
    }
  }
  return out;
}

/**
 * Generates the continual-learning benchmark: five old suites (in the roles of GSM8K, SVAMP, ARC,
 * MMLU-Pro and BBH) split into train, eval and flashback pools with disjoint inputs, and new
 * instruction tasks split by task into training and held-out evaluation. Deterministic in the seed.
 * @param options - the seed and the sizes.
 * @returns the suite.
 * @throws Error for sizes the generators cannot meet.
 * @example
 * ```ts
 * const suite = generateSuite({ seed: 1, oldEvalPerSuite: 50 });
 * writeSuite('data', suite);
 * ```
 */
export function generateSuite(options: SuiteOptions): Suite {
  const o = { oldTrainPerSuite: 200, oldEvalPerSuite: 100, flashbacksPerSuite: 32, instancesPerTask: 20, evalInstancesPerTask: 10, splitSalt: 0, skills: 0, ...options };
  const poolPerSuite = Math.max(o.flashbackPoolPerSuite ?? o.flashbacksPerSuite, o.flashbacksPerSuite);
  const root = createRng(o.seed);
  const old = {} as Suite['old'];
  const flashbacks: FlashbackRecord[] = [];
  const flashbackPool: FlashbackRecord[] = [];
  for (const name of OLD_SUITE_NAMES) {
    const gen = OLD_SUITES[name];
    const seen = new Set<string>();
    const train = fresh(gen, root.fork(`${name}/train`), o.oldTrainPerSuite, seen);
    const evalRecords = fresh(gen, root.fork(`${name}/eval`), o.oldEvalPerSuite, seen);
    old[name] = { train, eval: evalRecords };
    const pool = fresh(gen, root.fork(`${name}/flashback`), poolPerSuite, seen).map(toFlashback);
    flashbackPool.push(...pool);
    flashbacks.push(...pool.slice(0, o.flashbacksPerSuite));
  }
  const split = splitTasks(newTasks(), o.splitSalt);
  const pickTasks = (tasks: typeof split.train, cap: number | undefined, label: string) =>
    cap === undefined || cap >= tasks.length ? tasks : root.fork(label).sample(tasks, cap).sort((a, b) => tasks.indexOf(a) - tasks.indexOf(b));
  const trainTasks = pickTasks(split.train, o.newTrainTasks, 'new/train-tasks');
  const evalTasks = pickTasks(split.test, o.newEvalTasks, 'new/eval-tasks');
  const newTrain = trainTasks.flatMap((t) => instances(t, root.fork(`new/${t.name}`), o.instancesPerTask));
  const newEval = evalTasks.flatMap((t) => instances(t, root.fork(`new/${t.name}`), o.evalInstancesPerTask));
  const skills = generalSkills(root.fork('skills'), o.skills);
  const trainInputs = new Set(newTrain.map((r) => `${r.task}\n${r.input}`));
  const seenTasks = o.seenEvalTasks ? pickTasks(trainTasks, o.seenEvalTasks, 'new/seen-eval-tasks') : [];
  const newSeenEval = seenTasks.flatMap((t) =>
    instances(t, root.fork(`new/seen-eval/${t.name}`), o.evalInstancesPerTask * 3).filter((r) => !trainInputs.has(`${r.task}\n${r.input}`)).slice(0, o.evalInstancesPerTask),
  );
  return { seed: o.seed, old, flashbacks, flashbackPool, skills, newSeenEval, newTrain, newEval, newTrainTaskNames: trainTasks.map((t) => t.name), newEvalTaskNames: evalTasks.map((t) => t.name) };
}

/**
 * `perSuite` flashback prompts of each old suite, a seeded sample of the suite's pool: runs with
 * different seeds see different flashbacks, as the paper's do.
 * @param suite - a suite (its flashback pool).
 * @param perSuite - prompts per old suite.
 * @param seed - the run's seed.
 * @returns the flashbacks, suite by suite.
 * @throws RangeError when a suite's pool has fewer than perSuite prompts.
 * @example
 * ```ts
 * const flashbacks = sampleFlashbacks(generateSuite({ seed: 1 }), 10, 2);
 * ```
 */
export function sampleFlashbacks(suite: Pick<Suite, 'flashbackPool'>, perSuite: number, seed: number): FlashbackRecord[] {
  const rng = createRng(seed).fork('flashbacks');
  return OLD_SUITE_NAMES.flatMap((name) => {
    const pool = suite.flashbackPool.filter((f) => f.task === name);
    if (pool.length < perSuite) throw new RangeError(`sampleFlashbacks: ${perSuite} flashbacks of '${name}' asked for, its pool has ${pool.length}`);
    return rng.sample(pool, perSuite);
  });
}

/**
 * The files `writeSuite` produces for `suite`, relative to its directory.
 * @param suite - the suite (whether it has skills changes the list); omitted: a suite without.
 * @returns the file names.
 * @example
 * ```ts
 * suiteFiles().includes('new-train.jsonl'); // true
 * ```
 */
export function suiteFiles(suite?: Pick<Suite, 'skills'>): string[] {
  return [
    ...OLD_SUITE_NAMES.flatMap((n) => [`old-${n}-train.jsonl`, `old-${n}-eval.jsonl`]),
    'flashbacks.jsonl', 'new-train.jsonl', 'new-eval.jsonl', ...(suite?.skills.length ? ['skills-train.jsonl'] : []), 'README.md',
  ];
}

/**
 * Writes a suite as JSONL files and a README.md describing them.
 * @param dir - an existing directory.
 * @param suite - the suite.
 * @throws Error naming the path when a file cannot be written.
 * @example
 * ```ts
 * writeSuite('data', generateSuite({ seed: 1 })); // data/new-train.jsonl, data/flashbacks.jsonl, ...
 * ```
 */
export function writeSuite(dir: string, suite: Suite): void {
  for (const name of OLD_SUITE_NAMES) {
    writeJsonl(join(dir, `old-${name}-train.jsonl`), suite.old[name].train);
    writeJsonl(join(dir, `old-${name}-eval.jsonl`), suite.old[name].eval);
  }
  writeJsonl(join(dir, 'flashbacks.jsonl'), suite.flashbacks);
  writeJsonl(join(dir, 'new-train.jsonl'), suite.newTrain);
  writeJsonl(join(dir, 'new-eval.jsonl'), suite.newEval);
  if (suite.skills.length) writeJsonl(join(dir, 'skills-train.jsonl'), suite.skills);
  writeFileAtomic(join(dir, 'README.md'), readme(suite));
}

function readme(s: Suite): string {
  const rows = OLD_SUITE_NAMES.map((n) => `| old-${n}-train.jsonl / old-${n}-eval.jsonl | ${s.old[n].train.length} / ${s.old[n].eval.length} |`);
  return `# Generated JFA benchmark (seed ${s.seed})

Generated by jfa-torch's lib/data in the shape of the paper's evaluation; the same seed gives the same files.

| file | records |
|---|---|
${rows.join('\n')}
| flashbacks.jsonl | ${s.flashbacks.length} |
| new-train.jsonl | ${s.newTrain.length} (${s.newTrainTaskNames.length} tasks) |
| new-eval.jsonl | ${s.newEval.length} (${s.newEvalTaskNames.length} held-out tasks) |
${s.skills.length ? `| skills-train.jsonl | ${s.skills.length} |\n` : ''}
- Old suites (accuracy): arith-gsm (GSM8K-like), arith-svamp (SVAMP-like), science-mc (ARC-like),
  knowledge-mc (MMLU-Pro-like), logic (BBH-like). Records: {task, instruction, input, output, answer};
  \`answer\` is the number, the option letter, or the exact string that scoring extracts from an output.
- The old train files are the old data: only the Replay baseline may train on them. Eval inputs never occur in train.
- flashbacks.jsonl: prompts only ({task, instruction, input}), from the old suites, disjoint from their train and eval inputs.
- new-train.jsonl / new-eval.jsonl: {task, instruction, input, output}; the eval tasks are never seen in training
  (scored by ROUGE-L and exact match).
- skills-train.jsonl (when present): general instruction-following skills (copy, spell, look up, count,
  answer with a stated label) that a base model is pretrained on besides the old suites; none is a new task.
`;
}

// `jfa demo --rounds T`: continual rounds without replay on the demo's benchmark. The new tasks'
// families are dealt into T rounds; every method trains round by round, each round continuing from
// the last (train({ continueFrom })), and after each round is scored on the old suites and on the
// held-out tasks of every round so far: the accuracy matrix R, with BWT and forgetting.
import { rmSync } from 'node:fs';
import { join, resolve } from 'node:path';

import { newTasks } from '../data/new-tasks.js';
import { OLD_SUITE_NAMES } from '../data/old-tasks.js';
import { type InstanceRecord } from '../data/records.js';
import { createRng, hashString } from '../data/rng.js';
import { columnForgetting, type ContinueMode, continualMetrics } from '../jfa/continual.js';
import { evaluateNew } from '../jfa/evaluate.js';
import { type Method } from '../jfa/methods.js';
import { type LatentPool } from '../jfa/pool.js';
import { train } from '../jfa/trainer.js';
import { inOutputFolder, writeFileAtomic } from '../util/files.js';
import { BENCH_KEEP, type Bench, benchSummary, type DemoOptions, demoTraining, evaluateOldSuites, loadBase, methodLabel, prepareBench, trainProgress } from './demo.js';
import { progress } from '../util/progress.js';
import { aggregate, oldAverage, pct, renderReport } from './report.js';
import { type DemoResults, type MethodResult, type RoundRun, type RoundsResult, roundsSchema, type RunResult } from './results.js';
import { mean, sd } from './statistics.js';

/** The methods `jfa demo --rounds` trains unless told otherwise. */
export const ROUNDS_METHODS = ['sft', 'flashback', 'jfa'] as const satisfies readonly Method[];

/** One round of the split: the families it trains on, its training records and its held-out records. */
export interface RoundSplit {
  round: number;
  families: string[];
  train: InstanceRecord[];
  eval: InstanceRecord[];
}

/**
 * Deals the new tasks' families into `rounds` rounds, deterministic by `seed`: the families with
 * training records in a seeded order, each to the round with the fewest training records so far.
 * A round's held-out records are those of its families' held-out tasks; families with no training
 * task (held out whole) belong to no round.
 * @throws RangeError when there are fewer families than rounds, or a round gets no held-out record
 */
export function splitRounds(newTrain: InstanceRecord[], newEval: InstanceRecord[], rounds: number, seed: number): RoundSplit[] {
  const familyOf = new Map(newTasks().map((t) => [t.name, t.family]));
  const family = (r: InstanceRecord) => familyOf.get(r.task) ?? r.task;
  const counts = new Map<string, number>();
  for (const r of newTrain) counts.set(family(r), (counts.get(family(r)) ?? 0) + 1);
  const families = createRng(hashString(`${seed}:rounds`)).shuffle([...counts.keys()].sort());
  if (families.length < rounds) throw new RangeError(`--rounds ${rounds}: the new tasks have only ${families.length} families with training records`);
  const split: RoundSplit[] = Array.from({ length: rounds }, (_, i) => ({ round: i + 1, families: [], train: [], eval: [] }));
  const load = split.map(() => 0);
  for (const f of families) {
    const i = load.indexOf(Math.min(...load));
    split[i]!.families.push(f);
    load[i]! += counts.get(f)!;
  }
  const roundOf = new Map(split.flatMap((s, i) => s.families.map((f) => [f, i] as const)));
  for (const r of newTrain) split[roundOf.get(family(r))!]!.train.push(r);
  for (const r of newEval) {
    const i = roundOf.get(family(r));
    if (i !== undefined) split[i]!.eval.push(r);
  }
  split.forEach((s) => s.families.sort());
  const empty = split.find((s) => s.eval.length === 0);
  if (empty) throw new RangeError(`--rounds ${rounds}: round ${empty.round} (${empty.families.join(', ')}) has no held-out records; use fewer rounds or more held-out tasks`);
  return split;
}

/** The continue mode the demo's options ask for (--stack or --merge; default merge). */
export function roundsMode(o: DemoOptions): ContinueMode {
  if (o.stack && o.merge) throw new Error('options --stack and --merge exclude each other');
  return o.stack ? 'stack' : 'merge';
}

/** Every round of method `m` for one seed: trained in turn into `<out>/rounds/<m>[-seedN]/round-i`, scored after each. */
async function runRounds(b: Bench, m: Method, seed: number, split: RoundSplit[], mode: ContinueMode, budget: number): Promise<{ run: RoundRun; result: RunResult }> {
  const T = split.length;
  const dir = join(b.out, 'rounds', b.o.seeds > 1 ? `${m}-seed${seed}` : m);
  rmSync(dir, { recursive: true, force: true });
  const R: Array<Array<number | null>> = split.map(() => split.map(() => null));
  const EM: Array<Array<number | null>> = split.map(() => split.map(() => null));
  const old: RoundRun['old'] = [];
  const trainSeconds: number[] = [];
  const curve: RunResult['curve'] = [];
  let steps = 0;
  let tokens = 0;
  let last: { predictions: string[]; records: InstanceRecord[] } = { predictions: [], records: [] };
  for (let i = 0; i < T; i++) {
    const runDir = join(dir, `round-${i + 1}`);
    const label = `${methodLabel(m)} round ${i + 1}/${T}${b.o.seeds > 1 ? ` (seed ${seed})` : ''}`;
    using model = await loadBase(b.base.dir, b.o);
    const { data, options } = demoTraining(b, m, seed, split[i]!.train, runDir);
    const bar = trainProgress(label, b.quiet);
    const r = await train(model, b.tokenizer, data, {
      ...options,
      ...(i > 0 ? { continueFrom: join(dir, `round-${i}`), continueMode: mode, flashbackBudget: budget } : {}),
      onStep: bar.onStep,
    });
    bar.stop();
    curve.push(...bar.curve.map((p) => ({ ...p, step: p.step + steps })));
    steps += r.steps;
    tokens += r.tokens;
    trainSeconds.push(r.elapsedMs / 1000);
    const serving: LatentPool | undefined = r.pool?.mode === 'retrieve' ? r.pool : undefined;
    const evalRecords = split.slice(0, i + 1).reduce((s, x) => s + x.eval.length, 0) + OLD_SUITE_NAMES.reduce((s, n) => s + b.suite.old[n].eval.length, 0);
    const evalBar = progress(`  eval ${label}`, b.quiet);
    let done = 0;
    const scores = (await evaluateOldSuites(model, b.tokenizer, b.suite, b.o, (d) => evalBar.update(done + d, evalRecords), serving)).old;
    done += OLD_SUITE_NAMES.reduce((s, n) => s + b.suite.old[n].eval.length, 0);
    old.push(scores);
    last = { predictions: [], records: [] };
    for (let j = 0; j <= i; j++) {
      const records = split[j]!.eval;
      const e = await evaluateNew(model, b.tokenizer, records, { batch: b.o.eval.batch, maxNewTokens: b.o.eval.maxNewTokens, latent: serving, onBatch: (d) => evalBar.update(done + d, evalRecords) });
      done += records.length;
      R[i]![j] = e.rougeL;
      EM[i]![j] = e.exactMatch;
      last.records.push(...records);
      last.predictions.push(...e.predictions);
    }
    evalBar.stop();
    r.pool?.dispose();
    if (!b.quiet)
      process.stderr.write(`  ${label}: held-out ROUGE-L ${R[i]!.slice(0, i + 1).map((v, j) => `round ${j + 1} ${pct(v!)}`).join(', ')}; old-task accuracy ${pct(oldAverage({ old: scores }))}\n`);
  }
  const baseOld = oldAverage({ old: b.baseScores.old });
  const metrics = continualMetrics(R);
  const run: RoundRun = { seed, matrix: R, old, exactMatch: EM, bwt: metrics.bwt, forgetting: metrics.forgetting, oldForgetting: columnForgetting([baseOld, ...old.map((o) => oldAverage({ old: o }))]), trainSeconds };
  // The last round's model as a row of the usual results table: held-out scores over every round's tasks.
  const weights = split.map((s) => s.eval.length);
  const weighted = (row: Array<number | null>) => row.reduce<number>((s, v, j) => s + v! * weights[j]!, 0) / weights.reduce((s, w) => s + w, 0);
  const final = old[T - 1]!;
  const result: RunResult = {
    seed,
    old: final,
    newRougeL: weighted(R[T - 1]!),
    newExactMatch: weighted(EM[T - 1]!),
    forgetting: OLD_SUITE_NAMES.reduce((s, n) => s + (b.baseScores.old[n]! - final[n]!), 0) / OLD_SUITE_NAMES.length,
    trainSeconds: trainSeconds.reduce((s, x) => s + x, 0),
    steps,
    tokensPerSecond: tokens / trainSeconds.reduce((s, x) => s + x, 0),
    curve,
    examples: last.records.slice(0, 3).map((r, k) => ({ input: `${r.instruction} ${r.input}`, reference: r.output, prediction: last.predictions[k]! })),
  };
  return { run, result };
}

/** A method's rounds over its seeds: mean matrix, and BWT and forgetting as mean (± sd). */
function aggregateRounds(m: Method, runs: RoundRun[]): RoundsResult['methods'][number] {
  const T = runs[0]!.matrix.length;
  const cell = (i: number, j: number) => (j > i ? null : mean(runs.map((r) => r.matrix[i]![j]!)));
  const of = (f: (r: RoundRun) => number) => runs.map(f);
  return {
    method: m,
    label: methodLabel(m),
    matrix: Array.from({ length: T }, (_, i) => Array.from({ length: T }, (_, j) => cell(i, j))),
    old: Array.from({ length: T }, (_, i) => mean(runs.map((r) => oldAverage({ old: r.old[i]! })))),
    bwt: mean(of((r) => r.bwt)),
    forgetting: mean(of((r) => r.forgetting)),
    oldForgetting: mean(of((r) => r.oldForgetting)),
    ...(runs.length > 1 ? { sd: { bwt: sd(of((r) => r.bwt)), forgetting: sd(of((r) => r.forgetting)), oldForgetting: sd(of((r) => r.oldForgetting)) } } : {}),
    runs,
  };
}

/** `jfa demo --rounds T`: every method round by round, the matrix, BWT and forgetting; results.json and report.html. */
export async function runRoundsDemo(o: DemoOptions): Promise<DemoResults> {
  const T = o.rounds!;
  if (T < 2) throw new RangeError(`option 'rounds': continual rounds need at least 2, got ${T}`);
  if (o.nproc > 1) throw new RangeError(`option 'nproc' does not apply with --rounds yet: continued rounds train in one process`);
  // One demo per folder at a time, as for the plain demo.
  return inOutputFolder(resolve(o.out), 'demo', BENCH_KEEP, () => roundsIn(o, T));
}

async function roundsIn(o: DemoOptions, T: number): Promise<DemoResults> {
  const mode = roundsMode(o);
  const started = performance.now();
  const b = await prepareBench(o, `jfa demo --rounds ${T} (${mode})`);
  const split = splitRounds(b.newTrain, b.suite.newEval, T, o.seed);
  const budget = o.train.flashbacksPerSuite * OLD_SUITE_NAMES.length;
  if (!b.quiet)
    process.stderr.write(`rounds: ${split.map((s) => `${s.round}: ${s.families.length} families, ${s.train.length} training and ${s.eval.length} held-out records`).join('; ')}; each round's adapter ${mode === 'merge' ? 'merged into the base' : 'stacked frozen'} before the next; flashback budget ${budget}\n`);

  // The base before any round, on each round's held-out tasks.
  const base = { tasks: [] as number[], exactMatch: [] as number[] };
  {
    using model = await loadBase(b.base.dir, b.o);
    for (const s of split) {
      const e = await evaluateNew(model, b.tokenizer, s.eval, { batch: o.eval.batch, maxNewTokens: o.eval.maxNewTokens });
      base.tasks.push(e.rougeL);
      base.exactMatch.push(e.exactMatch);
    }
  }
  const runs = new Map<Method, Array<{ run: RoundRun; result: RunResult }>>(o.methods.map((m) => [m, []]));
  for (let s = 0; s < o.seeds; s++) for (const m of o.methods) runs.get(m)!.push(await runRounds(b, m, o.seed + s, split, mode, budget));

  const weights = split.map((s) => s.eval.length);
  const weighted = (xs: number[]) => xs.reduce((a, v, j) => a + v * weights[j]!, 0) / weights.reduce((a, w) => a + w, 0);
  const methods: MethodResult[] = [
    { method: 'base', label: 'base', old: b.baseScores.old, newRougeL: weighted(base.tasks), newExactMatch: weighted(base.exactMatch), forgetting: 0 },
    ...o.methods.map((m) => aggregate(m, methodLabel(m), runs.get(m)!.map((r) => r.result))),
  ];
  const rounds = roundsSchema.parse({
    count: T,
    mode,
    flashbackBudget: budget,
    split: split.map((s) => ({ round: s.round, families: s.families, trainRecords: s.train.length, evalRecords: s.eval.length })),
    base: { tasks: base.tasks, old: oldAverage({ old: b.baseScores.old }) },
    methods: o.methods.map((m) => aggregateRounds(m, runs.get(m)!.map((r) => r.run))),
  });
  const summary = benchSummary(b, started);
  const results: DemoResults = { ...summary, data: { ...summary.data, newEvalRecords: weights.reduce((a, w) => a + w, 0) }, methods, rounds };
  writeFileAtomic(join(b.out, 'results.json'), `${JSON.stringify(results, null, 2)}\n`);
  writeFileAtomic(join(b.out, 'report.html'), renderReport(results, `demo report, ${T} continual rounds`));
  if (o.json) console.log(JSON.stringify(results));
  else console.log(formatRounds(results));
  return results;
}

/** The console form: each method's matrix (rows: after round i; columns: round j's tasks, then the old suites), BWT and forgetting. */
export function formatRounds(r: DemoResults): string {
  const rounds = r.rounds!;
  const T = rounds.count;
  const head = ['after', ...Array.from({ length: T }, (_, j) => `round ${j + 1}`), 'old avg'];
  const lines: string[] = [];
  const table = (rows: string[][]) => {
    const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
    const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
    lines.push(line(head), ...rows.map(line));
  };
  lines.push(`held-out ROUGE-L on each round's tasks and old-suite accuracy, in %; ${T} rounds, adapters ${rounds.mode === 'merge' ? 'merged' : 'stacked'} between rounds`);
  const baseRow = ['base', ...rounds.base.tasks.map(pct), pct(rounds.base.old)];
  for (const m of rounds.methods) {
    lines.push('', m.label);
    table([baseRow, ...m.matrix.map((row, i) => [`round ${i + 1}`, ...row.map((v) => (v === null ? '-' : pct(v))), pct(m.old[i]!)])]);
    const pm = (v: number, s?: number) => `${pct(v)}${s === undefined ? '' : ` ± ${pct(s)}`}`;
    lines.push(`BWT ${pm(m.bwt, m.sd?.bwt)}  forgetting ${pm(m.forgetting, m.sd?.forgetting)}  old-suite forgetting ${pm(m.oldForgetting, m.sd?.oldForgetting)}`);
  }
  lines.push('', 'BWT = 1/(T-1) sum_{j<T} (R[T][j] - R[j][j]); forgetting = 1/(T-1) sum_{j<T} max_{j<=l<T} (R[l][j] - R[T][j]); old-suite forgetting: the same max over the base and rounds 1..T-1');
  lines.push(`wall time ${r.wallSeconds.toFixed(0)} s; report: ${join(r.out, 'report.html')}`);
  return lines.join('\n');
}

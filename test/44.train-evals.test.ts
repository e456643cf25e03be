// Evaluation during training (evalEvery, keepBest, maxForgetting) on the shipped base, where old-task
// answers and new-task outputs are built from a first run's own generations, so the step kept and
// the step the run stops at follow from them: a probe run records every step's predictions and
// adapter; the eval sets of the later runs are made so that step 0 answers every old record right
// (its own answers) and step k scores ROUGE-L 1 on the new tasks (its own outputs). Evaluating
// changes nothing in training, so the later runs go through the same steps. Then resume: a run
// cut short in the middle of an evaluation ends with the same evaluations, kept checkpoint and
// files as one that was not. And bad input refused before any work, and the CLI.
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { extractAnswer, newTaskScores } from '../lib/data/metrics.js';
import { type InstanceRecord, type OldRecord } from '../lib/data/records.js';
import { generateSuite } from '../lib/data/suite.js';
import { AbortError, type ErrorCode, isJfaError } from '../lib/errors.js';
import { type EvalProgress, type KeepBest, train, type TrainOptions, type TrainResult } from '../lib/jfa/trainer.js';
import { LlamaModel } from '../lib/model/llama.js';
import { Tokenizer } from '../lib/model/tokenizer.js';
import { root } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'jfa-evals-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const base = join(root, 'models', 'jfa-base');
const suite = generateSuite({ seed: 7, oldTrainPerSuite: 4, oldEvalPerSuite: 3, instancesPerTask: 1 });
const data = { newTrain: suite.newTrain.slice(0, 24), flashbacks: suite.flashbacks.slice(0, 8) };
const oldRecords = Object.values(suite.old).flatMap((s) => s.eval).slice(0, 8);
const newRecords = suite.newTrain.slice(0, 3);
// 6 steps; a learning rate high enough that the old answers change within them.
const options: TrainOptions = {
  method: 'jfa', microBatch: 4, accumulation: 1, maxTokens: 128, lr: 0.05, lora: { r: 4, loraAlpha: 8 }, seed: 3,
  latentOptions: { groups: 2, perGroup: 3, k: 2, rank: 2 }, evalEvery: 1, evalMaxNewTokens: 10,
};
const STEPS = 6;
const load = () => LlamaModel.load(base);
const tokenizer = Tokenizer.fromDir(base);
const file = (out: string, f: string) => readFileSync(join(out, 'adapter', f));
const evalRows = (out: string) =>
  readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((r) => r.type === 'eval').map(({ elapsedMs: _, ...r }) => r);

/** The probe run: every step's predictions, and its adapter and pool after each step (from its checkpoints, and at the end its adapter folder). */
const probe = { old: [] as string[][], new: [] as string[][] };
const probeOut = join(dir, 'probe');
const probeFile = (step: number, f: string) => readFileSync(step === STEPS ? join(probeOut, 'adapter', f) : join(dir, `probe-${step}`, f));
beforeAll(async () => {
  using model = load();
  const r = await train(model, tokenizer, data, {
    ...options, evalOld: oldRecords, evalNew: newRecords, outDir: probeOut, checkpointEvery: 1,
    onEval: (e) => {
      probe.old[e.step] = e.predictions.old!;
      probe.new[e.step] = e.predictions.new!;
    },
    onStep: (p) => {
      if (p.step === STEPS) return;
      mkdirSync(join(dir, `probe-${p.step}`));
      copyFileSync(join(probeOut, 'checkpoint', 'adapter', 'adapter_model.safetensors'), join(dir, `probe-${p.step}`, 'adapter_model.safetensors'));
      copyFileSync(join(probeOut, 'checkpoint', 'latent_pool.safetensors'), join(dir, `probe-${p.step}`, 'latent_pool.safetensors'));
    },
  });
  r.pool?.dispose();
  expect(probe.old).toHaveLength(STEPS + 1);
}, 600_000);

/** Old records whose answers are step 0's own (exact answers): step 0 scores 100%, a step scores the share of answers it still gives. */
const ownAnswers = (): OldRecord[] => oldRecords.map((r, i) => ({ ...r, task: 'echo', answer: extractAnswer(probe.old[0]![i]!, 'exact') ?? '' }));
const oldAccuracy = (answers: OldRecord[], step: number) =>
  answers.filter((r, i) => r.answer !== '' && !r.answer.endsWith('.') && extractAnswer(probe.old[step]![i]!, 'exact') === r.answer).length / answers.length;
/** Points, as the trainer rounds them. */
const points = (x: number) => Math.round(x * 1e8) / 1e6;
/** A step whose new-task outputs no other step repeats (ROUGE-L 1 against them only there). */
function distinctStep(): number {
  const candidates = [3, 2, 4, 5, 1].filter((k) =>
    probe.new[k]!.some((p) => /\p{L}/u.test(p)) && probe.new.every((other, j) => j === k || newTaskScores(probe.new[k]!, other).rougeL < 1));
  expect(candidates.length, 'construction: some step must generate new-task outputs no other step repeats').toBeGreaterThan(0);
  return candidates[0]!;
}
const ownOutputs = (k: number): InstanceRecord[] => newRecords.map((r, i) => ({ ...r, output: probe.new[k]![i]! }));

describe('keepBest and maxForgetting on a run whose answer is known', () => {
  it("keepBest 'new': the step whose outputs are the eval set's references is kept, adapter and pool", async () => {
    const k = distinctStep();
    const out = join(dir, 'keep-new');
    const seen: EvalProgress[] = [];
    using model = load();
    const r = await train(model, tokenizer, data, { ...options, outDir: out, evalNew: ownOutputs(k), keepBest: 'new', onEval: (e) => void seen.push(e) });
    r.pool?.dispose();
    // the same steps as the probe: the eval set does not change training
    expect(seen.map((e) => e.predictions.new)).toEqual(probe.new);
    expect(seen[k]!.new!.rougeL).toBe(1);
    expect(r.evals!.kept!.step).toBe(k);
    expect(r.evals!.kept!.score).toBe(100);
    expect(r.steps).toBe(STEPS);
    expect(file(out, 'adapter_model.safetensors').equals(probeFile(k, 'adapter_model.safetensors'))).toBe(true);
    // the last step's adapter would be another
    expect(file(out, 'adapter_model.safetensors').equals(probeFile(STEPS, 'adapter_model.safetensors'))).toBe(false);
    const rows = evalRows(out);
    expect(rows.map((x) => x.step)).toEqual([0, 1, 2, 3, 4, 5, 6]);
    expect(rows.at(-1)!.kept).toBe(k);
    expect(existsSync(join(out, 'checkpoint'))).toBe(false);
  }, 600_000);

  let uninterrupted: { out: string; result: TrainResult; expected: { stop: number; kept: number } };
  const guarded = (k: number, limit: number): TrainOptions => ({ ...options, evalOld: ownAnswers(), evalNew: ownOutputs(k), keepBest: 'balanced' as KeepBest, maxForgetting: limit });

  it("maxForgetting stops after the first step beyond it and keeps the best 'balanced' step within it", async () => {
    const k = distinctStep();
    const answers = ownAnswers();
    const acc = probe.old.map((_, s) => oldAccuracy(answers, s));
    const forgetting = acc.map((a) => points(acc[0]! - a));
    // The limit is the first loss seen: a step that loses exactly that much stays within it.
    const limit = forgetting.find((f) => f > 0);
    expect(limit, 'construction: training must change some old answers').toBeDefined();
    const stop = forgetting.findIndex((f) => f > limit!);
    expect(stop, 'construction: a later step must lose more').toBeGreaterThan(0);
    expect(stop).toBeLessThan(STEPS);
    const rouge = probe.new.map((p) => newTaskScores(p, probe.new[k]!).rougeL);
    const balanced = rouge.map((r, s) => points(r) - Math.max(0, forgetting[s]!));
    let kept = 0;
    for (let s = 1; s < stop; s++) if (balanced[s]! >= balanced[kept]!) kept = s;
    expect(kept, 'construction: a trained step beats the untrained adapter').toBeGreaterThan(0);

    const out = join(dir, 'guarded');
    using model = load();
    const r = await train(model, tokenizer, data, { ...guarded(k, limit!), outDir: out });
    r.pool?.dispose();
    uninterrupted = { out, result: r, expected: { stop, kept } };
    expect(r.evals!.start.old!.accuracy).toBe(acc[0]);
    expect(r.evals!.stopped).toMatchObject({ step: stop, forgetting: forgetting[stop], maxForgetting: limit });
    expect(r.evals!.stopped!.reason).toContain(`stopped after step ${stop} of ${STEPS}`);
    expect(r.evals!.kept).toMatchObject({ step: kept, score: balanced[kept] });
    expect(r.steps).toBe(stop);
    const rows = evalRows(out);
    expect(rows.map((x) => [x.step, (x.old as { accuracy: number }).accuracy, x.forgetting, x.score])).toEqual(
      acc.slice(0, stop + 1).map((a, s) => [s, a, forgetting[s], balanced[s]]),
    );
    expect(rows.at(-1)!.stop).toBe(r.evals!.stopped!.reason);
    // a clean end: no training after the stop, the kept adapter and pool written, no checkpoint
    const metrics = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { type: string; step: number });
    expect(Math.max(...metrics.filter((m) => m.type === 'train').map((m) => m.step))).toBe(stop);
    expect(metrics.at(-1)).toMatchObject({ type: 'kept', step: kept });
    expect(file(out, 'adapter_model.safetensors').equals(probeFile(kept, 'adapter_model.safetensors'))).toBe(true);
    expect(file(out, 'latent_pool.safetensors').equals(probeFile(kept, 'latent_pool.safetensors'))).toBe(true);
    expect(existsSync(join(out, 'checkpoint'))).toBe(false);
  }, 600_000);

  it('a run cut short in the middle of an evaluation resumes to the same evaluations, kept checkpoint and files', async () => {
    const { out: whole, result, expected } = uninterrupted;
    const k = distinctStep();
    const limit = result.evals!.stopped!.maxForgetting;
    const out = join(dir, 'guarded-resumed');
    const controller = new AbortController();
    // Checkpoints every 2 steps; the evaluation after step 2 is cut short, before that step's checkpoint is written.
    const cut = { ...guarded(k, limit), outDir: out, checkpointEvery: 2 };
    expect(expected.stop).toBeGreaterThan(2);
    {
      using model = load();
      const e = await train(model, tokenizer, data, { ...cut, signal: controller.signal, onEvalBatch: (b) => b.step === 2 && b.set === 'old' && controller.abort() }).then(
        () => expect.fail('expected an abort'),
        (err: unknown) => err,
      );
      expect(e).toBeInstanceOf(AbortError);
    }
    expect(JSON.parse(readFileSync(join(out, 'checkpoint', 'state.json'), 'utf8')).step).toBe(2);
    expect(evalRows(out).map((x) => x.step)).toEqual([0, 1]);
    using model = load();
    const r = await train(model, tokenizer, data, { ...cut, resume: true });
    r.pool?.dispose();
    expect(r.evals).toEqual(result.evals);
    expect(evalRows(out)).toEqual(evalRows(whole));
    for (const f of ['adapter_model.safetensors', 'latent_pool.safetensors']) expect(file(out, f).equals(file(whole, f)), f).toBe(true);
  }, 600_000);
});

describe('bad input is refused before any work', () => {
  const refused = async (o: Partial<TrainOptions>, code: ErrorCode, message: string | RegExp) => {
    const out = join(dir, 'never');
    using model = load();
    const { evalEvery: _, evalMaxNewTokens: __, ...plain } = options;
    const e = await train(model, tokenizer, data, { ...plain, outDir: out, ...o }).then(() => expect.fail('expected a rejection'), (err: unknown) => err);
    expect(isJfaError(e, code), String(e)).toBe(true);
    expect((e as Error).message).toMatch(message);
    expect(existsSync(out)).toBe(false);
  };
  it('names what is missing or wrong', async () => {
    await refused({ evalEvery: 2 }, 'ERR_JFA_OPTION', 'train: evalEvery needs something to evaluate: evalOld (old-suite records with answers) and/or evalNew (new-task records)');
    await refused({ evalOld: oldRecords }, 'ERR_JFA_OPTION', 'train: evalOld needs evalEvery (how many steps between evaluations)');
    await refused({ evalEvery: 2, evalNew: newRecords, keepBest: 'old' }, 'ERR_JFA_OPTION', "train: keepBest 'old' needs evalOld");
    await refused({ evalEvery: 2, evalNew: newRecords, keepBest: 'balanced' }, 'ERR_JFA_OPTION', "train: keepBest 'balanced' needs evalOld");
    await refused({ evalEvery: 2, evalOld: oldRecords, keepBest: 'best' as KeepBest }, 'ERR_JFA_OPTION', 'train: keepBest must be old, new, balanced, got "best"');
    await refused({ evalEvery: 2, evalNew: newRecords, maxForgetting: 5 }, 'ERR_JFA_OPTION', 'train: maxForgetting needs evalOld');
    await refused({ evalEvery: 2, evalOld: oldRecords, maxForgetting: 120 }, 'ERR_JFA_OPTION', 'train: maxForgetting must be a number of points in [0, 100], got 120');
    await refused({ evalEvery: 0, evalOld: oldRecords }, 'ERR_JFA_OPTION', 'train: evalEvery must be a positive integer, got 0');
    await refused({ evalEvery: 2, evalOld: [{ ...oldRecords[0]!, answer: undefined }] as unknown as OldRecord[] }, 'ERR_JFA_DATA', "train: evalOld[0]: missing field 'answer'");
    await refused({ evalEvery: 2, evalNew: [] }, 'ERR_JFA_DATA', 'train: evalNew has no records');
  });
});

describe('jfa train with evaluations', () => {
  const jfa = (...args: string[]) => spawnSync(process.execPath, [join(root, 'dist', 'cli', 'main.js'), ...args], { encoding: 'utf8', cwd: dir, timeout: 600_000 });
  const newFile = join(dir, 'new-train.jsonl');
  const oldFile = join(dir, 'old-eval.jsonl');
  const jsonl = (rs: object[]) => rs.map((r) => JSON.stringify(r)).join('\n') + '\n';
  beforeAll(() => {
    writeFileSync(newFile, jsonl(data.newTrain));
    writeFileSync(oldFile, jsonl(oldRecords));
  });
  const flags = ['--model', base, '--data', newFile, '--method', 'sft', '--micro-batch', '4', '--accumulation', '1', '--max-tokens', '128', '--lr', '0.05', '--r', '4', '--lora-alpha', '8', '--seed', '3'];

  it('--max-forgetting ends the run cleanly: exit 0, why on stderr, the kept checkpoint as the adapter', () => {
    const out = join(dir, 'cli-guarded');
    const r = jfa('train', ...flags, '--out', out, '--eval-every', '1', '--eval-old', oldFile, '--eval-max-new-tokens', '10', '--max-forgetting', '5', '--json');
    expect(r.status, r.stderr).toBe(0);
    const summary = JSON.parse(r.stdout) as { steps: number; evals: TrainResult['evals'] };
    const { stopped, kept, start } = summary.evals!;
    expect(stopped, 'the old answers change within the run (the library tests show where)').toBeDefined();
    expect(stopped!.forgetting).toBeGreaterThan(5);
    expect(summary.steps).toBe(stopped!.step);
    // without --keep-best, the last evaluation within the limit
    expect(kept!.step).toBe(stopped!.step - 1);
    expect(start.step).toBe(0);
    expect(existsSync(join(out, 'adapter', 'adapter_model.safetensors'))).toBe(true);
    expect(existsSync(join(out, 'checkpoint'))).toBe(false);
    const text = jfa('train', ...flags, '--out', join(dir, 'cli-guarded-text'), '--eval-every', '1', '--eval-old', oldFile, '--eval-max-new-tokens', '10', '--max-forgetting', '5');
    expect(text.status, text.stderr).toBe(0);
    expect(text.stderr).toContain(`more than maxForgetting 5: stopped after step ${stopped!.step} of 6; kept the checkpoint of step ${kept!.step}`);
    expect(text.stderr).toMatch(/^step 0\/6 eval: old \d+\.\d%, forgot 0\.0; kept: step 0$/m);
    expect(text.stdout).toContain(`, stopped by --max-forgetting 5,`);
  }, 600_000);

  it('refuses eval flags that cannot work, with a one-line reason and nothing written', () => {
    const out = join(dir, 'cli-never');
    const cases: [string[], string][] = [
      [['--eval-every', '2'], 'jfa: option --eval-every needs --eval-old FILE (old suites with answers) and/or --eval-new FILE (new tasks)'],
      [['--eval-old', oldFile], 'jfa: option --eval-old needs --eval-every N (steps between evaluations)'],
      [['--eval-every', '2', '--eval-old', join(dir, 'missing.jsonl')], `${join(dir, 'missing.jsonl')}`],
      [['--eval-every', '2', '--eval-new', newFile, '--keep-best', 'old'], "jfa: train: keepBest 'old' needs evalOld"],
      [['--eval-every', '2', '--eval-new', newFile, '--keep-best', 'most'], "jfa: option 'keepBest': must be one of old, new, balanced"],
      [['--eval-every', '2', '--eval-old', newFile], `jfa: ${newFile}: record 1 has no 'answer' (--eval-old records are scored by their answer)`],
    ];
    for (const [extra, message] of cases) {
      const r = jfa('train', ...flags, '--out', out, ...extra);
      expect(r.status, extra.join(' ')).not.toBe(0);
      expect(r.stderr.trim().split('\n'), r.stderr).toHaveLength(1);
      expect(r.stderr).toContain(message);
      expect(existsSync(out)).toBe(false);
    }
  });
});

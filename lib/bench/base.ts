// Building a base model from scratch (`jfa pretrain`, `jfa demo --pretrain`) and its model card:
// the exact command, the data it saw, its wall time, size, weights hash and old-suite scores. The
// demo's shipped base (models/jfa-base) was made by this code; the demo checks its hash.
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';

import { z } from 'zod';

import { readJsonl } from '../data/jsonl.js';
import { OLD_SUITE_NAMES, type OldSuiteName } from '../data/old-tasks.js';
import { PROBE_NAMES, type ProbeName, probeRecords } from '../data/probes.js';
import { type InstanceRecord, promptKey } from '../data/records.js';
import { createStream, type RecordStream, type StreamMix } from '../data/stream.js';
import { generateSuite, type Suite, type SuiteOptions } from '../data/suite.js';
import { evaluateOld } from '../jfa/evaluate.js';
import { CHECKPOINT, removeCheckpoint } from '../jfa/checkpoint.js';
import { pretrain } from '../jfa/pretrain.js';
import { probe } from '../jfa/probe.js';
import { learnMerges } from '../model/bpe.js';
import { createModel, intermediateSize } from '../model/create.js';
import { LlamaModel } from '../model/llama.js';
import { Tokenizer } from '../model/tokenizer.js';
import { runtimeInfo } from '../runtime.js';
import { readJson, writeFileAtomic } from '../util/files.js';
import { progress } from '../util/progress.js';

const int = z.number().int().positive();
const share = z.number().nonnegative();

/**
 * Pretraining settings. The defaults are the shipped base's (models/jfa-base/jfa-base.json records
 * the command that made it). On generated data the records are a fresh stream, never repeated, in
 * two phases: the in-context skills alone (copy, look up, match an option: they need induction
 * heads, which form only when such data dominates), then the old suites, all general skills and the
 * in-context skills mixed, by the shares given.
 */
export const baseSchema = z.object({
  hiddenSize: int.default(256),
  layers: int.default(4),
  heads: int.default(8),
  merges: z.number().int().nonnegative().default(1500),
  /**
   * Standard deviation of the initial weights. Measured (PyTorch, 2 layers of 256, 8 heads,
   * associative recall with 4 pairs, batch 64, lr 1e-3): at 0.02 (transformers' default) still on
   * the plateau at 1,750 steps (36% of values right, the table's values guessed); at 0.06 formed at
   * 1,000 steps (98%).
   */
  initStd: z.number().positive().default(0.02),
  /** generated data: old-task training records per suite in the suite (replay's old data; the tokenizer's text) */
  oldTrainPerSuite: int.default(6000),
  /** generated data: the seed of the suites */
  dataSeed: z.number().int().nonnegative().default(1),
  /** generated data: optimisation steps in all */
  steps: int.default(36000),
  /** generated data: steps of the first phase, plain copying alone (the first induction circuit) */
  copySteps: z.number().int().nonnegative().default(3000),
  /** generated data: steps of the next phase, the in-context skills alone */
  inContextSteps: z.number().int().nonnegative().default(6000),
  /** generated data, second phase: shares of old-suite, general-skill and in-context records */
  oldShare: share.default(0.5),
  skillShare: share.default(0.2),
  inContextShare: share.default(0.3),
  /**
   * generated data: the part of the in-context records (second and third phases) that are lookups.
   * Looking a key up and reading the value after it forms far more slowly than copying.
   */
  lookupShare: z.number().min(0).max(1).default(0.4),
  /**
   * generated data: the part of the in-context records (second and third phases) that are plain
   * copying. Measured: a copy probe at 78% after the copying phase fell to 26% within 2,000 steps
   * when copying was an eighth of the in-context records; copying must stay in the mixture.
   */
  copyShare: z.number().min(0).max(1).default(0.3),
  /** --data files only: passes over them */
  epochs: int.default(1),
  /**
   * Measured: at 3e-3 a small Llama barely learns to copy from its prompt (a 4-layer, 128-wide one
   * copying word lists: 67% token accuracy after 1,500 steps, against 99.7% at 1e-3; a 2-layer one
   * on number lists stayed near 49% in ours and in transformers alike), and a base pretrained at
   * 3e-3 scored at chance wherever an answer had to be looked up (option letters, numbers).
   */
  lr: z.number().positive().default(1e-3),
  /** steps of linear warm-up before the cosine decay */
  warmupSteps: z.number().int().nonnegative().default(200),
  microBatch: int.default(16),
  maxTokens: int.default(200),
  /** old-suite evaluation records per suite scored after pretraining, for the card (0: none) */
  evalPerSuite: z.number().int().nonnegative().default(200),
  /** probe records per skill scored after pretraining, for the card (0: none) */
  probes: z.number().int().nonnegative().default(100),
  /** score the probes every this many steps into the checkpoint folder's metrics.jsonl (0: never) */
  probeEvery: z.number().int().nonnegative().default(0),
  seed: z.number().int().nonnegative().default(1),
});
export type BaseOptions = z.infer<typeof baseSchema>;

/** What jfa-base.json holds beside a pretrained model. */
export interface BaseCard {
  version: 1;
  /** the command that rebuilds it */
  command: string;
  options: BaseOptions & { data?: string[] };
  parameters: number;
  /** distinct records trained on: the --data files' records, or every record of the stream */
  records: number;
  steps: number;
  tokens: number;
  /** pretraining time, summed over sittings */
  seconds: number;
  /** sha256 of model.safetensors */
  sha256: string;
  /** old-suite accuracy (0-1) on `evalPerSuite` held-out records each, greedy */
  scores?: Record<OldSuiteName, number>;
  /** probe exact match (0-1) on `probes` held-out records each, greedy */
  probes?: Record<ProbeName, number>;
  torchThreads?: number;
}

export const CARD_FILE = 'jfa-base.json';

export function sha256File(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

/** The generated suite a base with these data settings was pretrained beside (its eval records were never trained on). */
export function baseSuite(o: Pick<BaseOptions, 'dataSeed' | 'oldTrainPerSuite'>, extra: Omit<SuiteOptions, 'seed' | 'oldTrainPerSuite'> = {}): Suite {
  return generateSuite({ seed: o.dataSeed, oldTrainPerSuite: o.oldTrainPerSuite, ...extra });
}

/** Held-out prompts per old suite that a generated pretraining stream never draws: more than any evaluation uses. */
const HELD_OUT_EVAL = 2000;
const HELD_OUT_FLASHBACKS = 512;

/** In-context records of a phase, `share` of it in all: lookups, plain copying and the other in-context skills by the settings' parts. */
function inContextMix(share: number, o: BaseOptions): StreamMix {
  const rest = 1 - o.lookupShare - o.copyShare;
  if (rest < -1e-9) throw new RangeError(`pretrain: lookupShare + copyShare must be at most 1 (parts of the in-context records), got ${o.lookupShare} + ${o.copyShare}`);
  return { old: 0, skills: 0, inContext: share * Math.max(0, rest), copy: share * o.copyShare, named: { lookup: share * o.lookupShare } };
}

/** The generated pretraining stream of these settings: fresh records per step, held-out prompts excluded. */
export function baseStream(o: BaseOptions): RecordStream {
  const held = baseSuite(o, { oldEvalPerSuite: Math.max(HELD_OUT_EVAL, o.evalPerSuite), flashbackPoolPerSuite: HELD_OUT_FLASHBACKS, instancesPerTask: 1, evalInstancesPerTask: 1 });
  const exclude = new Set([
    ...OLD_SUITE_NAMES.flatMap((n) => held.old[n].eval.map(promptKey)),
    ...held.flashbackPool.map((f) => promptKey(f as { instruction: string; input: string })),
    ...Object.values(probeRecords(Math.max(200, o.probes))).flat().map(promptKey),
  ]);
  return createStream({
    seed: o.seed,
    perStep: o.microBatch,
    exclude,
    phases: [
      { steps: o.copySteps, mix: { old: 0, skills: 0, inContext: 0, copy: 1 } },
      { steps: o.inContextSteps, mix: inContextMix(1, o) },
      { steps: Math.max(0, o.steps - o.copySteps - o.inContextSteps), mix: { ...inContextMix(o.inContextShare, o), old: o.oldShare, skills: o.skillShare } },
    ],
  });
}

/** The `jfa pretrain` command line that gives these options. */
function commandLine(out: string, o: BaseOptions, data?: string[]): string {
  const flag = (k: string) => k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
  const parts = ['jfa pretrain', `--out ${out}`, ...(data?.length ? [`--data ${data.join(' ')}`] : [])];
  const generatedOnly = ['oldTrainPerSuite', 'dataSeed', 'steps', 'copySteps', 'inContextSteps', 'oldShare', 'skillShare', 'inContextShare', 'lookupShare', 'copyShare', 'evalPerSuite'];
  for (const [k, v] of Object.entries(o)) {
    if (data?.length ? generatedOnly.includes(k) : k === 'epochs') continue;
    parts.push(`--${flag(k)} ${v}`);
  }
  return parts.join(' ');
}

/** Where a base's pretraining keeps its checkpoint, metrics and initial model unless told: beside it. */
export function defaultCheckpointDir(out: string): string {
  return `${out.replace(/[\\/]+$/, '')}.pretrain`;
}

/** How {@link buildBase} runs: data files, output, checkpoints, sittings. */
export interface BuildOptions {
  /** JSONL files to pretrain on instead of the generated stream */
  data?: string[];
  quiet?: boolean;
  label?: string;
  /** the run's checkpoint folder (default: `<out>.pretrain`); it goes once the base is written */
  checkpointDir?: string;
  /** steps between checkpoints (default 500) */
  checkpointEvery?: number;
  /** continue the run in checkpointDir */
  resume?: boolean;
  /** stop after this step, resumable (pretraining in sittings) */
  pauseAfter?: number;
  /** cancels the run at the next step boundary, resumable (a checkpoint, then an AbortError) */
  signal?: AbortSignal;
}

/**
 * Creates a model and pretrains every weight: on `data` files when given, else on the generated
 * stream; then writes it to `out` and scores it on the probes and the old suites (generated data
 * only) into its card (jfa-base.json and README.md). With `pauseAfter` it may stop early: the run is
 * then in its checkpoint folder, and `resume` continues it.
 * @returns the card, or the step reached when the run stopped early.
 */
export async function buildBase(out: string, o: BaseOptions, b: BuildOptions = {}): Promise<BaseCard | { stoppedAt: number; totalSteps: number; checkpointDir: string }> {
  const log = (line: string) => b.quiet || process.stderr.write(`${line}\n`);
  const label = b.label ?? 'pretrain';
  const ck = resolve(b.checkpointDir ?? defaultCheckpointDir(out));
  const initial = join(ck, 'initial');
  const source: InstanceRecord[] | RecordStream = b.data?.length ? b.data.flatMap((f) => readJsonl(f, 'instance')) : baseStream(o);
  if (b.resume) {
    if (!existsSync(join(initial, 'config.json'))) throw new Error(`${label}: nothing to resume in ${ck} (no initial model; run without --resume to start)`);
  } else {
    if (existsSync(join(ck, CHECKPOINT)) || existsSync(join(ck, `${CHECKPOINT}.old`)))
      throw new Error(`${label}: ${ck} holds an unfinished run; continue it with --resume, or remove the folder to start again`);
    rmSync(ck, { recursive: true, force: true });
    // The tokenizer is learned from old and new text alike, as a general-purpose one would be.
    const stepsOf = (from: number, n: number) => Array.from({ length: Math.max(0, Math.min(n, o.steps - from)) }, (_, i) => from + i);
    // From a stream: the first steps of each phase, the last phase's (the old suites' text) weighing most.
    const mixed = o.copySteps + o.inContextSteps;
    const sample = Array.isArray(source) ? source : [...stepsOf(0, Math.min(o.copySteps, 300)), ...stepsOf(o.copySteps, Math.min(o.inContextSteps, 500)), ...stepsOf(mixed, 1500)].flatMap((s) => source.at(s));
    const newText = baseSuite(o, { oldEvalPerSuite: 1, flashbacksPerSuite: 1 }).newTrain;
    const merges = learnMerges([...sample, ...newText].flatMap((r) => [r.instruction, r.input, r.output]), o.merges);
    createModel(initial, { hiddenSize: o.hiddenSize, intermediateSize: intermediateSize(o.hiddenSize), numLayers: o.layers, numHeads: o.heads, merges, seed: o.seed, initStd: o.initStd });
  }
  const tokenizer = Tokenizer.fromDir(initial);
  using model = await LlamaModel.loadAsync(initial);
  const identity = { options: { ...o, ...(b.data?.length ? { data: b.data } : {}) } };
  const earlier = readSittings(ck);
  log(`${label}: ${(model.parameterCount / 1e6).toFixed(2)}M parameters, ${Array.isArray(source) ? `${source.length} records x ${o.epochs} epochs` : `${o.steps} steps of fresh records`} -> ${out} (checkpoints in ${ck})`);
  const bar = progress(`  ${label}`, Boolean(b.quiet));
  const r = await pretrain(model, tokenizer, source, {
    epochs: o.epochs,
    steps: o.steps,
    lr: o.lr,
    warmupRatio: o.warmupSteps / (Array.isArray(source) ? Math.ceil(source.length / o.microBatch) * o.epochs : o.steps),
    microBatch: o.microBatch,
    maxTokens: o.maxTokens,
    seed: o.seed,
    checkpointDir: ck,
    checkpointEvery: b.checkpointEvery,
    resume: b.resume,
    identity,
    pauseAfter: b.pauseAfter,
    signal: b.signal,
    onStep: (p) => bar.update(p.step, p.totalSteps, { loss: p.sft.toFixed(3), 'tok/s': p.tokensPerSecond.toFixed(0) }),
    every: o.probeEvery > 0 ? { steps: o.probeEvery, run: async (step) => {
      const scores = await probe(model, tokenizer, { perProbe: 50 });
      log(`\n  step ${step}: probes ${PROBE_NAMES.map((n) => `${n} ${(100 * scores[n]).toFixed(0)}`).join(', ')}`);
      return scores;
    } } : undefined,
  });
  bar.stop();
  const sittings = [...earlier, { steps: r.steps, tokens: r.tokens, seconds: r.elapsedMs / 1000 }];
  writeSittings(ck, sittings);
  if (r.steps < r.totalSteps) return { stoppedAt: r.steps, totalSteps: r.totalSteps, checkpointDir: ck };

  model.save(out);
  let probes: BaseCard['probes'];
  if (o.probes > 0) probes = await probe(model, tokenizer, { perProbe: o.probes });
  let scores: BaseCard['scores'];
  if (!b.data?.length && o.evalPerSuite > 0) {
    const suite = baseSuite(o, { oldEvalPerSuite: o.evalPerSuite });
    scores = {} as Record<OldSuiteName, number>;
    const evalBar = progress('  score old suites', Boolean(b.quiet));
    for (const [i, name] of OLD_SUITE_NAMES.entries()) {
      scores[name] = (await evaluateOld(model, tokenizer, suite.old[name].eval, { batch: 50, maxNewTokens: 96 })).accuracy;
      evalBar.update(i + 1, OLD_SUITE_NAMES.length);
    }
    evalBar.stop();
  }
  const card: BaseCard = {
    version: 1,
    command: commandLine(out, o, b.data),
    options: identity.options,
    parameters: model.parameterCount,
    records: Array.isArray(source) ? source.length : r.totalSteps * o.microBatch,
    steps: r.steps,
    tokens: sittings.reduce((s, x) => s + x.tokens, 0),
    seconds: sittings.reduce((s, x) => s + x.seconds, 0),
    sha256: sha256File(join(out, 'model.safetensors')),
    scores,
    probes,
    torchThreads: runtimeInfo().numThreads,
  };
  writeCard(out, card);
  // The base is written: its checkpoint can go (the metrics stay for the record).
  removeCheckpoint(ck);
  return card;
}

const SITTINGS = 'sittings.json';
function readSittings(ck: string): { steps: number; tokens: number; seconds: number }[] {
  return existsSync(join(ck, SITTINGS)) ? readJson(join(ck, SITTINGS)) : [];
}
function writeSittings(ck: string, s: { steps: number; tokens: number; seconds: number }[]): void {
  writeFileAtomic(join(ck, SITTINGS), `${JSON.stringify(s)}\n`);
}

export function writeCard(dir: string, card: BaseCard): void {
  writeFileAtomic(join(dir, CARD_FILE), `${JSON.stringify(card, null, 2)}\n`);
  const table = (head: string, rows: Record<string, number>) => [`| ${head} | % |`, '|---|---|', ...Object.entries(rows).map(([k, v]) => `| ${k} | ${(100 * v).toFixed(1)} |`),
    `| mean | ${((100 * Object.values(rows).reduce((a, v) => a + v, 0)) / Object.values(rows).length).toFixed(1)} |`].join('\n');
  const o = card.options;
  const data = o.data
    ? `${o.data.join(', ')}; ${card.records} records x ${o.epochs} epoch${o.epochs > 1 ? 's' : ''}`
    : `a stream of fresh generated records at data seed ${o.dataSeed}, none repeated and none of the held-out prompts (old-suite evaluation, flashbacks, probes): ${o.copySteps} steps of plain copying, ${o.inContextSteps} steps of the in-context skills alone (copy, look up, match an option), then ${Math.max(0, o.steps - o.copySteps - o.inContextSteps)} steps of old suites, general skills and in-context skills in shares ${o.oldShare}/${o.skillShare}/${o.inContextShare} (of the in-context records, a ${o.lookupShare} part lookups and a ${o.copyShare} part plain copying, here and in the phase before); ${card.records} records`;
  writeFileAtomic(join(dir, 'README.md'), `# ${o.data ? 'Pretrained Llama' : 'jfa-base: the demo\'s base model'}

A ${(card.parameters / 1e6).toFixed(2)}M-parameter Llama (${o.layers} layers, hidden size ${o.hiddenSize}, ${o.heads} heads, byte-level BPE with ${o.merges} merges), trained from scratch by jfa-torch's \`jfa pretrain\`.
It stands in for an off-the-shelf instruction-tuned model that is good at its old tasks.

- Command: \`${card.command}\`
- Data: ${data}, ${card.steps} steps at micro-batch ${o.microBatch}, lr ${o.lr} (cosine), ${card.tokens} target tokens.
- Seed ${o.seed}; pretraining took ${(card.seconds / 60).toFixed(1)} min${card.torchThreads ? ` on ${card.torchThreads} CPU threads` : ''}.
- Weights: model.safetensors, float32, sha256 \`${card.sha256}\`.
- Loads in transformers (\`AutoModelForCausalLM\`, \`AutoTokenizer\`) and in jfa-torch (\`loadModel\`).

## Probes (greedy, exact match, ${o.probes} held-out records each)

${card.probes ? table('probe', card.probes) : '(not scored)'}

## Old-suite accuracy (greedy, ${o.evalPerSuite} held-out records per suite)

${card.scores ? table('suite', card.scores) : '(not scored: trained on user data)'}
`);
}

/** Reads a base's card, or undefined when the directory has none. */
export function readCard(dir: string): BaseCard | undefined {
  const file = join(dir, CARD_FILE);
  return existsSync(file) ? readJson<BaseCard>(file) : undefined;
}

/** Checks model.safetensors against the card's hash; throws naming both hashes and the fix. */
export function verifyBase(dir: string, card: BaseCard): void {
  const file = join(dir, 'model.safetensors');
  if (!existsSync(file)) throw new Error(`${file}: missing (the base model's weights)`);
  const got = sha256File(file);
  if (got !== card.sha256)
    throw new Error(`${file}: sha256 ${got.slice(0, 16)}... does not match its card's ${card.sha256.slice(0, 16)}... (${join(dir, CARD_FILE)}); restore it (git checkout) or rebuild it with jfa demo --pretrain`);
}

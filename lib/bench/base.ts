// Building a base model from scratch (`jfa pretrain`, `jfa demo --pretrain`) and its model card:
// the exact command, the data it saw, its wall time, size, weights hash and old-suite scores. The
// demo's shipped base (models/jfa-base) was made by this code; the demo checks its hash.
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';

import { z } from 'zod';

import { readJsonl } from '../data/jsonl.js';
import { OLD_SUITE_NAMES, type OldSuiteName } from '../data/old-tasks.js';
import { PROBE_NAMES, type ProbeName, probeRecords } from '../data/probes.js';
import { type InstanceRecord, promptKey } from '../data/records.js';
import { createStream, type RecordStream, type StreamMix, type StreamPhase } from '../data/stream.js';
import { generateSuite, type Suite, type SuiteOptions } from '../data/suite.js';
import { evaluateOld } from '../jfa/evaluate.js';
import { CHECKPOINT, checkpointFile, removeCheckpoint, STATE_FILE } from '../jfa/checkpoint.js';
import { pretrain, WEIGHTS_FILE } from '../jfa/pretrain.js';
import { probe } from '../jfa/probe.js';
import { learnMerges } from '../model/bpe.js';
import { createModel, intermediateSize } from '../model/create.js';
import { DESCRIPTION_FILES, LlamaModel } from '../model/llama.js';
import { Tokenizer } from '../model/tokenizer.js';
import { runtimeInfo } from '../runtime.js';
import { readJson, writeFileAtomic } from '../util/files.js';
import { progress } from '../util/progress.js';

const int = z.number().int().positive();
const share = z.number().nonnegative();

/**
 * The shipped base's curriculum (docs/demo.md has the runs that chose it). Lookup forms only once the
 * model finds a word by its content: first continuing a list from a given word, then lookups of one
 * key (the key stands in one other place) beside lookups of several; plain copying joins once they
 * have formed; then the old suites and general skills, the in-context skills kept in the mix.
 */
export const DEFAULT_PHASES: readonly StreamPhase[] = [
  { steps: 1000, mix: { old: 0, skills: 0, inContext: 0, named: { 'continue-from': 1 } } },
  { steps: 2000, mix: { old: 0, skills: 0, inContext: 0.2, named: { 'lookup-one': 0.4, lookup: 0.2, 'continue-from': 0.2 } } },
  { steps: 1000, mix: { old: 0, skills: 0, inContext: 0.2, copy: 0.3, named: { lookup: 0.25, 'lookup-one': 0.1, 'continue-from': 0.15 } } },
  { steps: 0, mix: { old: 0.5, skills: 0.15, inContext: 0.13, copy: 0.08, named: { lookup: 0.08, 'lookup-one': 0.02, 'continue-from': 0.04 } } },
];

/**
 * Pretraining settings. The defaults are the shipped base's curriculum in one run; the shipped base
 * itself was made in two sittings (models/jfa-base/jfa-base.json records both commands). On
 * generated data the records are a fresh stream, never repeated, in the phases of `phases`.
 */
export const baseSchema = z.object({
  hiddenSize: int.default(256),
  layers: int.default(4),
  heads: int.default(8),
  merges: z.number().int().nonnegative().default(1500),
  /**
   * No BPE merge takes the space: every space is a token and a word is the same tokens after a
   * space, a newline or '=' (docs/demo.md: a tokenizer whose words carry their leading space made
   * the translation family's dictionary lookups a mapping between different tokens).
   */
  splitSpaces: z.boolean().optional(),
  /**
   * Standard deviation of the initial weights. Measured (PyTorch, 2 layers of 256, 8 heads,
   * associative recall with 4 pairs, batch 64, lr 1e-3): at 0.02 (transformers' default) still on
   * the plateau at 1,750 steps (36% of values right, the table's values guessed); at 0.06 formed at
   * 1,000 steps (98%).
   */
  initStd: z.number().positive().default(0.02),
  /**
   * Standard deviation of the attention's query and key weights (default: initStd). Their product
   * sets the attention logits at the start: from small ones attention is uniform, and the gradient
   * of each factor is proportional to the other, so content-based lookups form late.
   */
  attentionInitStd: z.number().positive().optional(),
  /** generated data: old-task training records per suite in the suite (replay's old data; the tokenizer's text) */
  oldTrainPerSuite: int.default(6000),
  /** generated data: the seed of the suites */
  dataSeed: z.number().int().nonnegative().default(1),
  /** generated data: optimisation steps in all (the last phase runs to here) */
  steps: int.default(12500),
  /**
   * generated data: the curriculum. Each phase lasts `steps` steps of fresh records drawn by `mix`:
   * shares of old-suite records (`old`), all general skills (`skills`), the in-context skills
   * (`inContext`), plain copying (`copy`) and single skills by name (`named`); the last phase runs
   * on to `steps` in all. The default is the shipped base's ({@link DEFAULT_PHASES}).
   */
  phases: z.array(z.object({
    steps: z.number().int().nonnegative(),
    mix: z.object({ old: share.default(0), skills: share.default(0), inContext: share.default(0), copy: share.optional(), named: z.record(z.string(), share).optional() }).strict(),
  }).strict()).min(1).default(() => DEFAULT_PHASES.map((p) => ({ steps: p.steps, mix: { ...p.mix, ...(p.mix.named ? { named: { ...p.mix.named } } : {}) } }))),
  /**
   * Start from this model instead of random weights (continued pretraining): a model directory, or a
   * pretraining run's folder, whose last checkpoint's weights are taken. Its shape and tokenizer
   * replace hiddenSize, layers, heads, merges and the inits.
   */
  initFrom: z.string().optional(),
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
  microBatch: int.default(32),
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
  /** with initFrom: the run it started from, when that run says (its command and steps) */
  from?: { command: string; steps: number };
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
    phases: o.phases,
  });
}

/**
 * Fills `initial` with the model a run starts from: a model directory (Hugging Face layout), or a
 * pretraining run's folder (its initial model with its last checkpoint's weights), e.g. one paused
 * once its in-context circuits formed.
 */
function startFrom(from: string, initial: string, label: string): void {
  const dir = resolve(from);
  let weights: string;
  let files: string;
  if (existsSync(join(dir, 'config.json')) && existsSync(join(dir, 'model.safetensors'))) {
    files = dir;
    weights = join(dir, 'model.safetensors');
  } else if (existsSync(join(dir, 'initial', 'config.json'))) {
    files = join(dir, 'initial');
    const ck = checkpointFile(dir, WEIGHTS_FILE);
    if (!ck) throw new Error(`${label}: --init-from ${from}: a pretraining folder without a checkpoint (no ${CHECKPOINT}/${WEIGHTS_FILE})`);
    weights = ck;
  } else throw new Error(`${label}: --init-from ${from}: neither a model directory (config.json, model.safetensors) nor a pretraining folder (initial/, ${CHECKPOINT}/)`);
  mkdirSync(initial, { recursive: true });
  for (const f of DESCRIPTION_FILES) if (existsSync(join(files, f))) copyFileSync(join(files, f), join(initial, f));
  copyFileSync(weights, join(initial, 'model.safetensors'));
}

/**
 * What made the model `from` points at, where it says: a base's card, or a paused pretraining run's
 * checkpoint state (its options and step).
 */
export function provenance(from: string): BaseCard['from'] {
  const dir = resolve(from);
  const card = readCard(dir);
  if (card) return { command: card.command, steps: card.steps };
  const state = checkpointFile(dir, STATE_FILE);
  if (!state) return undefined;
  const s = readJson<{ step?: number; options?: unknown }>(state);
  const parsed = baseSchema.safeParse(s.options);
  if (!parsed.success || typeof s.step !== 'number') return undefined;
  return { command: `${commandLine(dir.replace(/\.pretrain$/, ''), parsed.data)} --pause-after ${s.step}`, steps: s.step };
}

/** The `jfa pretrain` command line that gives these options. */
function commandLine(out: string, o: BaseOptions, data?: string[]): string {
  const flag = (k: string) => k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
  const parts = ['jfa pretrain', `--out ${out}`, ...(data?.length ? [`--data ${data.join(' ')}`] : [])];
  const generatedOnly = ['oldTrainPerSuite', 'dataSeed', 'steps', 'phases', 'evalPerSuite'];
  for (const [k, v] of Object.entries(o)) {
    if (v === undefined || (data?.length ? generatedOnly.includes(k) : k === 'epochs')) continue;
    if (typeof v === 'boolean') {
      if (v) parts.push(`--${flag(k)}`);
      continue;
    }
    parts.push(`--${flag(k)} ${k === 'phases' ? `'${JSON.stringify(v)}'` : v}`);
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
    if (o.initFrom) startFrom(o.initFrom, initial, label);
    else {
      // From a stream: the first 300 steps of the first phase, 500 of each next one, and 1,500 of the
      // last (the old suites' text weighing most).
      let sample: InstanceRecord[];
      if (Array.isArray(source)) sample = source;
      else {
        const phases = o.phases;
        let start = 0;
        sample = phases.flatMap((p, i) => {
          const from = start;
          start += p.steps;
          return stepsOf(from, i + 1 === phases.length ? 1500 : Math.min(p.steps, i === 0 ? 300 : 500));
        }).flatMap((s) => source.at(s));
      }
      const newText = baseSuite(o, { oldEvalPerSuite: 1, flashbacksPerSuite: 1 }).newTrain;
      const merges = learnMerges([...sample, ...newText].flatMap((r) => [r.instruction, r.input, r.output]), o.merges, { splitSpaces: o.splitSpaces ?? false });
      createModel(initial, { hiddenSize: o.hiddenSize, intermediateSize: intermediateSize(o.hiddenSize), numLayers: o.layers, numHeads: o.heads, merges, seed: o.seed, initStd: o.initStd, attentionInitStd: o.attentionInitStd });
    }
  }
  const tokenizer = Tokenizer.fromDir(initial);
  using model = await LlamaModel.loadAsync(initial);
  if (o.initFrom) {
    // The shape is the starting model's: the card states what was trained.
    const c = model.config;
    const merges = (readJson<{ model?: { merges?: unknown[] } }>(join(initial, 'tokenizer.json')).model?.merges ?? []).length;
    o = { ...o, hiddenSize: c.hiddenSize, layers: c.numLayers, heads: c.numHeads, merges };
  }
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
    ...(o.initFrom ? { from: provenance(o.initFrom) } : {}),
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

/** A phase's mix in words: `old 0.5, lookup 0.2, ...`. */
function mixText(m: StreamMix): string {
  const parts: [string, number][] = [['old suites', m.old], ['general skills', m.skills], ['in-context skills', m.inContext], ['copying', m.copy ?? 0], ...Object.entries(m.named ?? {})];
  return parts.filter(([, v]) => v > 0).map(([k, v]) => `${k} ${v}`).join(', ');
}

export function writeCard(dir: string, card: BaseCard): void {
  writeFileAtomic(join(dir, CARD_FILE), `${JSON.stringify(card, null, 2)}\n`);
  const table = (head: string, rows: Record<string, number>) => [`| ${head} | % |`, '|---|---|', ...Object.entries(rows).map(([k, v]) => `| ${k} | ${(100 * v).toFixed(1)} |`),
    `| mean | ${((100 * Object.values(rows).reduce((a, v) => a + v, 0)) / Object.values(rows).length).toFixed(1)} |`].join('\n');
  const o = card.options;
  const data = o.data
    ? `${o.data.join(', ')}; ${card.records} records x ${o.epochs} epoch${o.epochs > 1 ? 's' : ''}`
    : `a stream of fresh generated records at data seed ${o.dataSeed}, none repeated and none of the held-out prompts (old-suite evaluation, flashbacks, probes), in ${o.phases.length} phase${o.phases.length > 1 ? 's' : ''}: ${o.phases.map((p) => `${p.steps} steps of ${mixText(p.mix)}`).join('; then ')} (the last to the end); ${card.records} records`;
  writeFileAtomic(join(dir, 'README.md'), `# ${o.data ? 'Pretrained Llama' : 'jfa-base: the demo\'s base model'}

A ${(card.parameters / 1e6).toFixed(2)}M-parameter Llama (${o.layers} layers, hidden size ${o.hiddenSize}, ${o.heads} heads, byte-level BPE with ${o.merges} merges), trained from scratch by jfa-torch's \`jfa pretrain\`.
It stands in for an off-the-shelf instruction-tuned model that is good at its old tasks.

- Command: \`${card.command}\`
- Data: ${data}, ${card.steps} steps at micro-batch ${o.microBatch}, lr ${o.lr} (cosine), ${card.tokens} target tokens.
${card.from ? `- Started from the model of \`${card.from.command}\` (${card.from.steps} steps), trained on from there.\n` : ''}- Seed ${o.seed}; pretraining took ${(card.seconds / 60).toFixed(1)} min${card.torchThreads ? ` on ${card.torchThreads} CPU threads` : ''}.
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

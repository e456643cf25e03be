// Building a base model from scratch (`jfa pretrain`, `jfa demo --pretrain`) and its model card:
// the exact command, the data it saw, its wall time, size, weights hash and old-suite scores. The
// demo's shipped base (models/jfa-base) was made by this code; the demo checks its hash.
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import { z } from 'zod';

import { readJsonl } from '../data/jsonl.js';
import { OLD_SUITE_NAMES, type OldSuiteName } from '../data/old-tasks.js';
import { type InstanceRecord } from '../data/records.js';
import { generateSuite, type Suite, type SuiteOptions } from '../data/suite.js';
import { evaluateOld } from '../jfa/evaluate.js';
import { pretrain } from '../jfa/pretrain.js';
import { learnMerges } from '../model/bpe.js';
import { createModel, intermediateSize } from '../model/create.js';
import { LlamaModel } from '../model/llama.js';
import { Tokenizer } from '../model/tokenizer.js';
import { runtimeInfo } from '../runtime.js';
import { readJson, writeFileAtomic } from '../util/files.js';
import { progress } from './progress.js';

const int = z.number().int().positive();

/**
 * Pretraining settings. The defaults are the shipped base's (models/jfa-base/jfa-base.json records
 * the command that made it): a 4-layer, 256-wide Llama trained on the five old suites' training
 * data and on general skills, for 4 epochs.
 */
export const baseSchema = z.object({
  hiddenSize: int.default(256),
  layers: int.default(4),
  heads: int.default(4),
  merges: z.number().int().nonnegative().default(400),
  /** generated data only: old-task training records per suite, general-skill records, and their seed */
  oldTrainPerSuite: int.default(6000),
  skills: z.number().int().nonnegative().default(15000),
  dataSeed: z.number().int().nonnegative().default(1),
  epochs: int.default(4),
  /**
   * Measured: at 3e-3 a small Llama barely learns to copy from its prompt (a 4-layer, 128-wide one
   * copying word lists: 67% token accuracy after 1,500 steps, against 99.7% at 1e-3; a 2-layer one
   * on number lists stayed near 49% in ours and in transformers alike), and a base pretrained at
   * 3e-3 scored at chance wherever an answer had to be looked up (option letters, numbers).
   */
  lr: z.number().positive().default(1e-3),
  microBatch: int.default(16),
  maxTokens: int.default(200),
  /** old-suite evaluation records per suite scored after pretraining, for the card (0: none) */
  evalPerSuite: z.number().int().nonnegative().default(200),
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
  records: number;
  steps: number;
  tokens: number;
  seconds: number;
  /** sha256 of model.safetensors */
  sha256: string;
  /** old-suite accuracy (0-1) on `evalPerSuite` held-out records each, greedy */
  scores?: Record<OldSuiteName, number>;
  torchThreads?: number;
}

export const CARD_FILE = 'jfa-base.json';

export function sha256File(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

/** The generated suite a base with these data settings was pretrained on (its eval records were not). */
export function baseSuite(o: Pick<BaseOptions, 'dataSeed' | 'oldTrainPerSuite'>, extra: Omit<SuiteOptions, 'seed' | 'oldTrainPerSuite'> = {}): Suite {
  return generateSuite({ seed: o.dataSeed, oldTrainPerSuite: o.oldTrainPerSuite, ...extra });
}

/** The `jfa pretrain` command line that gives these options. */
function commandLine(out: string, o: BaseOptions, data?: string[]): string {
  const flag = (k: string) => k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
  const parts = ['jfa pretrain', `--out ${out}`, ...(data?.length ? [`--data ${data.join(' ')}`] : [])];
  for (const [k, v] of Object.entries(o)) {
    if (data?.length && ['oldTrainPerSuite', 'skills', 'dataSeed', 'evalPerSuite'].includes(k)) continue;
    parts.push(`--${flag(k)} ${v}`);
  }
  return parts.join(' ');
}

/**
 * Creates a model in `out` and pretrains every weight: on `data` files when given, else on the
 * generated old suites' training data plus general skills; then scores it on the old suites
 * (generated data only) and writes the card (jfa-base.json and README.md).
 */
export async function buildBase(out: string, o: BaseOptions, options: { data?: string[]; quiet?: boolean; label?: string } = {}): Promise<BaseCard> {
  const log = (line: string) => options.quiet || process.stderr.write(`${line}\n`);
  const suite = options.data?.length ? undefined : baseSuite(o, { skills: o.skills, oldEvalPerSuite: o.evalPerSuite || 1 });
  const records: InstanceRecord[] = suite ? [...OLD_SUITE_NAMES.flatMap((n) => suite.old[n].train), ...suite.skills] : options.data!.flatMap((f) => readJsonl(f, 'instance'));
  // The tokenizer is learned from old and new text alike, as a general-purpose one would be.
  const texts = [...records, ...(suite?.newTrain ?? [])].flatMap((r) => [r.instruction, r.input, r.output]);
  const merges = learnMerges(texts, o.merges);
  createModel(out, { hiddenSize: o.hiddenSize, intermediateSize: intermediateSize(o.hiddenSize), numLayers: o.layers, numHeads: o.heads, merges, seed: o.seed });
  const tokenizer = Tokenizer.fromDir(out);
  using model = await LlamaModel.loadAsync(out);
  log(`${options.label ?? 'pretrain'}: ${(model.parameterCount / 1e6).toFixed(2)}M parameters, ${records.length} records x ${o.epochs} epochs -> ${out}`);
  const bar = progress(`  ${options.label ?? 'pretrain'}`, Boolean(options.quiet));
  const r = await pretrain(model, tokenizer, records, {
    epochs: o.epochs,
    lr: o.lr,
    microBatch: o.microBatch,
    maxTokens: o.maxTokens,
    seed: o.seed,
    onStep: (p) => bar.update(p.step, p.totalSteps, { loss: p.sft.toFixed(3), 'tok/s': p.tokensPerSecond.toFixed(0) }),
  });
  bar.stop();
  model.save(out);
  let scores: BaseCard['scores'];
  if (suite && o.evalPerSuite > 0) {
    scores = {} as Record<OldSuiteName, number>;
    const evalBar = progress('  score old suites', Boolean(options.quiet));
    for (const [i, name] of OLD_SUITE_NAMES.entries()) {
      scores[name] = (await evaluateOld(model, tokenizer, suite.old[name].eval, { batch: 50, maxNewTokens: 64 })).accuracy;
      evalBar.update(i + 1, OLD_SUITE_NAMES.length);
    }
    evalBar.stop();
  }
  const card: BaseCard = {
    version: 1,
    command: commandLine(out, o, options.data),
    options: { ...o, ...(options.data?.length ? { data: options.data } : {}) },
    parameters: model.parameterCount,
    records: records.length,
    steps: r.steps,
    tokens: r.tokens,
    seconds: r.elapsedMs / 1000,
    sha256: sha256File(join(out, 'model.safetensors')),
    scores,
    torchThreads: runtimeInfo().numThreads,
  };
  writeCard(out, card);
  return card;
}

export function writeCard(dir: string, card: BaseCard): void {
  writeFileAtomic(join(dir, CARD_FILE), `${JSON.stringify(card, null, 2)}\n`);
  const scores = card.scores
    ? [`| suite | accuracy (%) |`, `|---|---|`, ...Object.entries(card.scores).map(([k, v]) => `| ${k} | ${(100 * v).toFixed(1)} |`),
      `| mean | ${((100 * Object.values(card.scores).reduce((s, v) => s + v, 0)) / Object.values(card.scores).length).toFixed(1)} |`].join('\n')
    : '(not scored: trained on user data)';
  writeFileAtomic(join(dir, 'README.md'), `# ${card.options.data ? 'Pretrained Llama' : 'jfa-base: the demo\'s base model'}

A ${(card.parameters / 1e6).toFixed(2)}M-parameter Llama (${card.options.layers} layers, hidden size ${card.options.hiddenSize}, ${card.options.heads} heads, byte-level BPE with ${card.options.merges} merges), trained from scratch by jfa-torch's \`jfa pretrain\`.
It stands in for an off-the-shelf instruction-tuned model that is good at its old tasks.

- Command: \`${card.command}\`
- Data: ${card.options.data ? card.options.data.join(', ') : `the generated benchmark at data seed ${card.options.dataSeed}: ${card.options.oldTrainPerSuite} training records of each of the five old suites and ${card.options.skills} general-skill records (copy, spell, look up, count, answer with a stated label)`}; ${card.records} records, ${card.options.epochs} epoch${card.options.epochs > 1 ? 's' : ''}, ${card.steps} steps, ${card.tokens} target tokens.
- Seed ${card.options.seed}; pretraining took ${(card.seconds / 60).toFixed(1)} min${card.torchThreads ? ` on ${card.torchThreads} CPU threads` : ''}.
- Weights: model.safetensors, float32, sha256 \`${card.sha256}\`.
- Loads in transformers (\`AutoModelForCausalLM\`, \`AutoTokenizer\`) and in jfa-torch (\`loadModel\`).

## Old-suite accuracy (greedy, ${card.options.evalPerSuite} held-out records per suite)

${scores}
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

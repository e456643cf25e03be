// The regularising methods (ewc, o-lora, pace): their options, checked, and what their steps need
// that the micro-batches do not carry: EWC's Fisher, estimated once at the base and kept in the run
// folder (a resumed run reads it back, bit-identical); O-LoRA's earlier rounds' A, read from the
// continued run's adapter files. The native step computes the penalties from these tensors and
// PACE's noise from its seed (native/core/regularizers.cpp, llama.cpp's AdapterNoise).
import { existsSync } from 'node:fs';
import { join } from 'node:path';

import { type FlashbackRecord, type InstanceRecord } from '../data/records.js';
import { hashString } from '../data/rng.js';
import { CheckpointError, describeValue, OptionError } from '../errors.js';
import { generateText } from '../model/generate.js';
import { type LlamaModel, modelHandle } from '../model/llama.js';
import { loadSafetensors, saveSafetensors } from '../model/safetensors.js';
import { type Tokenizer } from '../model/tokenizer.js';
import { Tensor, tensor } from '../tensor.js';
import { type PreviousRun } from './continual.js';
import { promptText, sftBatch } from './examples.js';
import { METHOD_PRESETS, type MethodPreset, METHODS } from './methods.js';
import { type StepPenalties } from './step.js';

/** Defaults of the regularising methods' options (train()'s TRAIN_DEFAULTS gathers them). */
export const REGULARIZER_DEFAULTS = {
  /** ewc: weight of the Fisher-weighted penalty on the adapters' weight change */
  ewcLambda: 1,
  /** ewc: flashback prompts (the first ones) the Fisher is estimated on */
  ewcSamples: 64,
  /** o-lora: weight of the orthogonality penalty against the earlier rounds' A */
  oloraLambda: 0.5,
  /** pace: standard deviation of the multiplicative noise on the adapters' outputs */
  paceSigma: 0.1,
  /** pace: weight of the consistency between two perturbed passes */
  paceLambda: 1,
} as const;

/** Options of the regularising methods (part of {@link TrainOptions}); defaults in {@link REGULARIZER_DEFAULTS}. */
export interface RegularizerOptions {
  /**
   * ewc: weight lambda of the penalty lambda x sum F * (scale B A)^2 over the adapted layers (default
   * 1; not tuned: a first guess at a weight that is seen beside the cross-entropy without drowning it), F the diagonal Fisher of their base weights
   */
  ewcLambda?: number | undefined;
  /**
   * ewc: how many flashback prompts (the first ones of data.flashbacks) the Fisher is estimated on,
   * each with the base's own sampled answer (default 64)
   */
  ewcSamples?: number | undefined;
  /** o-lora: weight lambda of lambda x sum ||A A_old^T||_F^2 against each earlier round's A (default 0.5) */
  oloraLambda?: number | undefined;
  /** pace: standard deviation sigma of the noise eps ~ N(0, sigma^2) multiplying each adapter's output by (1 + eps) (default 0.1) */
  paceSigma?: number | undefined;
  /** pace: weight lambda of the consistency between two perturbed passes' final hidden states (default 1) */
  paceLambda?: number | undefined;
}

/** The regularisers of a run, checked: each present only when its method has it. */
export interface RunRegularizers {
  ewc?: { lambda: number; samples: number };
  olora?: { lambda: number };
  pace?: { sigma: number; lambda: number };
}

/** The run folder's file of EWC's Fisher: one float32 tensor per adapted layer, `<module>.fisher`. */
export const EWC_FISHER_FILE = 'ewc-fisher.safetensors';
/** Tokens the base samples per flashback prompt for the Fisher's labels. */
const FISHER_ANSWER_TOKENS = 32;
/** Prompts sampled together. */
const BATCH = 16;

type Switch = 'ewc' | 'olora' | 'pace';
const OPTIONS_OF: Record<Switch, (keyof RegularizerOptions)[]> = {
  ewc: ['ewcLambda', 'ewcSamples'],
  olora: ['oloraLambda'],
  pace: ['paceSigma', 'paceLambda'],
};
/** The methods whose row has a switch, for errors (read from the table, never written here). */
const methodsWith = (k: Switch) => METHODS.filter((m) => METHOD_PRESETS[m][k] === true).map((m) => `'${m}'`).join(', ');

/**
 * The regularisers' options checked against the method's row: an option of a switch the row lacks,
 * a negative or non-finite weight, or EWC without flashback prompts, is an OptionError.
 */
export function regularizerSettings(o: RegularizerOptions & { method: string; distributed?: unknown }, preset: MethodPreset, flashbacks: number): RunRegularizers {
  for (const k of Object.keys(OPTIONS_OF) as Switch[]) {
    if (preset[k]) continue;
    const given = OPTIONS_OF[k].filter((name) => o[name] !== undefined);
    if (given.length) throw new OptionError(`train: ${given.join(', ')} appl${given.length > 1 ? 'y' : 'ies'} only to method ${methodsWith(k)} (method '${o.method}')`);
  }
  const weight = (name: keyof RegularizerOptions) => {
    const v = o[name] ?? REGULARIZER_DEFAULTS[name];
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new OptionError(`train: ${name} must be a finite number >= 0, got ${describeValue(v)}`);
    return v;
  };
  const out: RunRegularizers = {};
  if (preset.ewc) {
    const samples = o.ewcSamples ?? REGULARIZER_DEFAULTS.ewcSamples;
    if (!Number.isInteger(samples) || samples < 1) throw new OptionError(`train: ewcSamples must be a positive integer, got ${describeValue(o.ewcSamples)}`);
    const lambda = weight('ewcLambda');
    if (flashbacks === 0) throw new OptionError(`train: method '${o.method}' needs flashbacks: the prompts its Fisher is estimated on (data.flashbacks, --flashbacks)`);
    if (o.distributed !== undefined) throw new OptionError(`train: method '${o.method}' trains in one process (drop distributed)`);
    out.ewc = { lambda, samples };
  }
  if (preset.olora) out.olora = { lambda: weight('oloraLambda') };
  if (preset.pace) {
    const sigma = weight('paceSigma');
    if (sigma === 0) throw new OptionError("train: paceSigma must be > 0 (the noise is what PACE trains against), got 0");
    out.pace = { sigma, lambda: weight('paceLambda') };
  }
  return out;
}

/**
 * The step's penalties for a run's regularisers, made before the first step: EWC's Fisher (from the
 * run folder when resuming, else estimated and written there), O-LoRA's earlier A (none without a
 * continued run: plain SFT), PACE's settings.
 * @param model - the model, with this round's adapters set up.
 * @param tokenizer - its tokenizer.
 * @param regs - the run's regularisers.
 * @param run - the flashbacks, seed, token limit, previous run and run folder.
 * @returns the step's penalties (undefined when the run has none).
 */
export async function stepPenalties(
  model: LlamaModel,
  tokenizer: Tokenizer,
  regs: RunRegularizers,
  run: { flashbacks: FlashbackRecord[]; seed: number; maxTokens: number; previous?: PreviousRun | undefined; dir?: string | undefined; resume: boolean; write: boolean },
): Promise<StepPenalties | undefined> {
  if (!regs.ewc && !regs.olora && !regs.pace) return undefined;
  const p: StepPenalties = {};
  if (regs.ewc) p.ewc = { lambda: regs.ewc.lambda, fisher: await ewcFisher(model, tokenizer, run.flashbacks.slice(0, regs.ewc.samples), run) };
  if (regs.olora && run.previous) p.olora = { lambda: regs.olora.lambda, previous: earlierA(model, run.previous) };
  if (regs.pace) p.pace = regs.pace;
  return p;
}

/** The modules with an adapter, in loraParameters' order (the native step's order). */
function adaptedModules(model: LlamaModel): string[] {
  return Object.keys(model.loraParameters()).filter((k) => k.endsWith('.lora_A.weight')).map((k) => k.slice(0, -'.lora_A.weight'.length));
}

/**
 * EWC's diagonal Fisher of the adapted layers' base weights: the base (adapters off) samples an
 * answer to each prompt (temperature 1, seeded), and the Fisher is the mean over prompts of the
 * squared gradient of the answer's log-likelihood.
 */
async function ewcFisher(model: LlamaModel, tokenizer: Tokenizer, prompts: FlashbackRecord[], run: { seed: number; maxTokens: number; dir?: string | undefined; resume: boolean; write: boolean }): Promise<Tensor[]> {
  const modules = adaptedModules(model);
  const file = run.dir === undefined ? undefined : join(run.dir, EWC_FISHER_FILE);
  if (file && run.resume) return readFisher(file, modules, model);
  const records: InstanceRecord[] = [];
  for (let i = 0; i < prompts.length; i += BATCH) {
    const chunk = prompts.slice(i, i + BATCH);
    const answers = await generateText(model, tokenizer, chunk.map(promptText), { maxNewTokens: FISHER_ANSWER_TOKENS, temperature: 1, seed: hashString(`${run.seed}:ewc:${i}`), adapters: false });
    chunk.forEach((f, j) => records.push(answered(f, answers[j]!.text)));
  }
  const batch = sftBatch(tokenizer, records, run.maxTokens);
  try {
    const handles = await modelHandle(model).fisherDiagonalAsync(batch.ids.handle, { attentionMask: batch.attentionMask.handle, targets: batch.targets.handle });
    const fisher = handles.map((h) => new Tensor(h));
    if (file && run.write) saveSafetensors(file, Object.fromEntries(modules.map((m, i) => [`${m}.fisher`, fisher[i]!])), { samples: String(prompts.length) });
    return fisher;
  } finally {
    for (const t of [batch.ids, batch.attentionMask, batch.targets]) t.dispose();
  }
}

/** A flashback with the base's answer, prompted exactly as the flashback is (promptText). */
function answered(f: FlashbackRecord, output: string): InstanceRecord {
  return ('prompt' in f ? { task: f.task, prompt: f.prompt, output } : { task: f.task, instruction: f.instruction, input: f.input, output }) as InstanceRecord;
}

/** A resumed run's Fisher: the file its first part wrote, for the same adapted layers. */
function readFisher(file: string, modules: string[], model: LlamaModel): Tensor[] {
  if (!existsSync(file)) throw new CheckpointError(`train: the checkpoint is incomplete: ${file} (the Fisher this run's EWC penalty weighs with) is missing`);
  const { tensors } = loadSafetensors(file);
  const keys = modules.map((m) => `${m}.fisher`);
  if (Object.keys(tensors).length !== keys.length || keys.some((k) => !tensors[k]))
    throw new CheckpointError(`train: ${file} holds the Fisher of other layers than this run's adapters: it belongs to another run`);
  return keys.map((k) => (model.device === 'cpu' ? tensors[k]! : tensors[k]!.to(model.device as never)));
}

/**
 * O-LoRA's earlier A of each adapted layer: every earlier round's lora_A of that module (read from
 * its adapter file), stacked by rows; (0, in) where no earlier round adapted the module.
 */
function earlierA(model: LlamaModel, prev: PreviousRun): Tensor[] {
  const params = model.loraParameters();
  const rounds = prev.rounds.map((r) => loadSafetensors(join(r.adapter, 'adapter_model.safetensors')).tensors);
  return adaptedModules(model).map((m) => {
    const key = `${m}.lora_A.weight`;
    const inFeatures = params[key]!.shape[1]!;
    const rows = rounds.map((t) => t[key]).filter((t): t is Tensor => t !== undefined);
    const values = rows.map((t) => (t.dtype === 'float32' ? t : t.to('float32')).toTypedArray() as Float32Array);
    const all = new Float32Array(values.reduce((n, v) => n + v.length, 0));
    values.reduce((at, v) => (all.set(v, at), at + v.length), 0);
    const stacked = tensor(all, [all.length / inFeatures, inFeatures]);
    return model.device === 'cpu' ? stacked : stacked.to(model.device as never);
  });
}

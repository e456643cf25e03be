// A base model with a trained adapter folded into its weights (W + scale B A), for runtimes that
// know nothing of LoRA: written in Hugging Face layout (mergeAdapter) or, through lib/model/gguf,
// as GGUF (exportGguf in ./export.ts). A continued run's adapter brings the earlier rounds recorded
// in its run folder, and all of them are folded, oldest first. An adapter trained to serve with a
// 'retrieve' latent pool is refused: the pool adds increments chosen per prompt, which no fixed
// set of weights can hold.
import { copyFileSync, existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';

import { ModelFormatError, OptionError } from '../errors.js';
import { LlamaModel } from '../model/llama.js';
import { errnoOf } from '../util/files.js';
import { CONTINUAL_FILE, poolMode, PROMPTS_FILE, readRun } from './continual.js';
import { findLatentPool, LATENT_POOL_FILE } from './pool.js';

/** Options of {@link mergeAdapter}. */
export interface MergeOptions {
  /** the base model directory (Hugging Face layout) */
  model: string;
  /** the adapter directory (PEFT layout), e.g. a run folder's `adapter/` */
  adapter: string;
  /** the folder to write; it must not exist */
  out: string;
}

/** What {@link mergeAdapter} did. */
export interface MergeResult {
  /** the folder written (absolute) */
  out: string;
  /** the adapters folded into the base, oldest first: a continued run's earlier rounds, then the adapter given */
  adapters: string[];
  /** wall time in milliseconds */
  ms: number;
}

/** Tokenizer files other than those `LlamaModel.save` copies, carried over when the base has them. */
const EXTRA_TOKENIZER_FILES = ['tokenizer.model', 'vocab.json', 'merges.txt', 'added_tokens.json', 'chat_template.jinja'];

/**
 * The adapters an adapter directory stands for, oldest first: the earlier rounds its run folder
 * records (continual.json), then itself; a plain adapter alone.
 * @param adapter - a PEFT adapter directory.
 * @returns absolute adapter directories.
 * @throws ModelFormatError when the run folder's continual.json or an earlier round is broken.
 * @example
 * ```ts
 * adapterChain('runs/round-2/adapter'); // [.../round-2/rounds/1/adapter, .../round-2/adapter]
 * ```
 */
export function adapterChain(adapter: string): string[] {
  const dir = resolve(adapter);
  const run = dirname(dir);
  if (basename(dir) !== 'adapter' || !existsSync(join(run, CONTINUAL_FILE)) || !existsSync(join(run, PROMPTS_FILE))) return [dir];
  try {
    return readRun(run).rounds.map((r) => r.adapter);
  } catch (e) {
    throw new ModelFormatError((e as Error).message.replace(/^continueFrom: /, ''), { cause: e });
  }
}

/**
 * Throws when an adapter was trained to serve with a 'retrieve' latent pool (a per-prompt choice of
 * increments no merged checkpoint or GGUF can hold). A 'drop' pool, or none, is fine: the adapter
 * was trained to stand alone.
 * @param adapter - an adapter directory.
 * @param what - the command or function, for the message.
 * @throws ModelFormatError saying why and what to do instead.
 * @example
 * ```ts
 * refuseRetrievePool('runs/jfa/adapter', 'export gguf'); // throws for a 'retrieve' pool
 * ```
 */
export function refuseRetrievePool(adapter: string, what: string): void {
  const file = findLatentPool(adapter);
  if (!file || poolMode(file) !== 'retrieve') return;
  throw new ModelFormatError(
    `${what}: ${adapter} was trained with latent mode 'retrieve': its ${LATENT_POOL_FILE} adds increments chosen per prompt, ` +
      `which a merged checkpoint or GGUF cannot express; train with --latent-mode drop (or --no-latent) to export, or serve it with jfa itself (jfa generate, loadRun)`,
  );
}

/**
 * Loads `modelDir` and folds every adapter of `adapter`'s chain into its weights, oldest first
 * (each with its own scale: lora_alpha / r, or lora_alpha / sqrt(r) with use_rslora).
 * adapter_config.json's fan_in_fan_out is ignored, as PEFT ignores it for the nn.Linear layers of
 * a Llama. A continued run trained with 'stack' folds the same way: merged and stacked rounds make
 * the same function up to float rounding.
 * @param modelDir - the base model directory.
 * @param adapter - the adapter directory.
 * @param what - the command or function, for messages.
 * @returns the merged model (no adapters left) and the adapters folded; dispose the model.
 * @throws ModelFormatError for a 'retrieve' adapter, an adapter of another base (shapes that do not fit) or a broken run folder.
 * @example
 * ```ts
 * const { model, adapters } = await loadMerged('models/jfa-base', 'runs/jfa/adapter', 'merge');
 * model.save('merged');
 * model.dispose();
 * ```
 */
export async function loadMerged(modelDir: string, adapter: string, what: string): Promise<{ model: LlamaModel; adapters: string[] }> {
  const adapters = adapterChain(adapter);
  // Refused before gigabytes of weights are read.
  for (const a of adapters) refuseRetrievePool(a, what);
  const model = await LlamaModel.loadAsync(modelDir);
  try {
    for (const a of adapters) {
      try {
        model.loadAdapter(a);
      } catch (e) {
        if (e instanceof ModelFormatError) throw new ModelFormatError(`${what}: ${e.message}`, { cause: e });
        throw e;
      }
      model.mergeLora();
    }
  } catch (e) {
    model.dispose();
    throw e;
  }
  return { model, adapters };
}

/**
 * Claims an output path that must not exist yet: its parent is created, and a temporary name beside
 * it is returned for the caller to write and then rename into place (so that a failure or a kill
 * never leaves a half-written output under the final name).
 * @param out - the file or folder to write.
 * @param what - the command or function, for messages.
 * @param kind - 'folder' creates the temporary folder now; 'file' checks the parent is writable.
 * @returns the temporary path.
 * @throws OptionError when `out` exists or cannot be written (read-only, a file in its path).
 * @example
 * ```ts
 * const tmp = claimOutput('merged', 'merge', 'folder');
 * // ... write into tmp ...
 * commitOutput(tmp, 'merged', 'merge');
 * ```
 */
export function claimOutput(out: string, what: string, kind: 'folder' | 'file'): string {
  const target = resolve(out);
  if (existsSync(target)) throw new OptionError(`${what}: ${out} exists; choose another path or remove it first`);
  const tmp = `${target}.tmp-${process.pid}`;
  try {
    mkdirSync(dirname(target), { recursive: true });
    rmSync(tmp, { recursive: true, force: true });
    mkdirSync(tmp); // for a file, a probe that the folder takes new entries
    if (kind === 'file') rmSync(tmp, { recursive: true });
  } catch (e) {
    throw new OptionError(`${what}: cannot write ${out} (${errnoOf(e)})`);
  }
  return tmp;
}

/**
 * Renames a finished temporary output into place; the temporary is removed if that fails.
 * @param tmp - what {@link claimOutput} returned, now written.
 * @param out - the final path.
 * @param what - the command or function, for messages.
 * @throws OptionError when `out` appeared meanwhile or the rename fails.
 * @example
 * ```ts
 * commitOutput(claimOutput('out', 'merge', 'folder'), 'out', 'merge'); // an empty folder 'out'
 * ```
 */
export function commitOutput(tmp: string, out: string, what: string): void {
  try {
    if (existsSync(out)) throw Object.assign(new Error('EEXIST'), { code: 'EEXIST' });
    renameSync(tmp, out);
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw new OptionError(`${what}: cannot write ${out} (${errnoOf(e)})`);
  }
}

/**
 * Folds a PEFT LoRA adapter (a continued run's with all its rounds) into its base and writes the
 * result as a Hugging Face model folder: model.safetensors, config.json, the tokenizer files and
 * generation_config.json when the base has one. transformers, vLLM and llama.cpp's converter load it
 * as a plain model. Nothing is left at `out` when it fails.
 * @param o - the base model, the adapter and the output folder (which must not exist).
 * @returns the folder written and the adapters folded.
 * @throws (rejects with) OptionError when `out` exists or cannot be written; ModelFormatError for an
 *   adapter trained with a 'retrieve' latent pool, an adapter of another base, or unreadable files.
 * @example
 * ```ts
 * const { out, adapters } = await mergeAdapter({ model: 'models/jfa-base', adapter: 'runs/jfa/adapter', out: 'merged' });
 * console.log(`${adapters.length} adapter(s) folded into ${out}`);
 * ```
 */
export async function mergeAdapter(o: MergeOptions): Promise<MergeResult> {
  const what = 'merge';
  const started = performance.now();
  const tmp = claimOutput(o.out, what, 'folder');
  try {
    const { model, adapters } = await loadMerged(o.model, o.adapter, what);
    try {
      model.save(tmp);
    } finally {
      model.dispose();
    }
    for (const f of EXTRA_TOKENIZER_FILES) if (existsSync(join(o.model, f))) copyFileSync(join(o.model, f), join(tmp, f));
    commitOutput(tmp, resolve(o.out), what);
    return { out: resolve(o.out), adapters, ms: performance.now() - started };
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}

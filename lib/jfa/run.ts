// loadRun(): a finished training run, ready to serve in one call. The base model its folder records
// (or the one given), the earlier rounds of a continued run folded beneath, the run's adapter on top,
// and its latent pool when the adapter was trained to serve with one ('retrieve' mode). The latent
// pool is part of such a model: PEFT loads the adapter without it, so a 'retrieve' adapter serves
// with its increments only here, in `jfa eval` and in `jfa generate`.
import { basename, dirname, isAbsolute, resolve } from 'node:path';

import { type Device } from '../device.js';
import { ModelFormatError, OptionError } from '../errors.js';
import { type GeneratedText, generateText, type GenerateTextOptions } from '../model/generate.js';
import { LlamaModel } from '../model/llama.js';
import { Tokenizer } from '../model/tokenizer.js';
import { type Dtype } from '../tensor.js';
import { loadAdapterWithRounds, readRun } from './continual.js';
import { LatentPool } from './pool.js';

/** Options of {@link loadRun}. */
export interface LoadRunOptions {
  /** the base model directory (default: the one the run folder records) */
  model?: string | undefined;
  /** the base weights' dtype (default float32) */
  dtype?: Dtype | undefined;
  /** where to load it (default cpu) */
  device?: Device | undefined;
  /** serve the run's 'retrieve' latent pool (default true); false serves the adapter alone, as PEFT would */
  latent?: boolean | undefined;
}

/** A finished run loaded by {@link loadRun}: dispose it (or `using`) when done. */
export interface LoadedRun extends Disposable {
  /** the run folder (absolute) */
  readonly run: string;
  /** the base model directory it was loaded from */
  readonly base: string;
  /** the base with the earlier rounds beneath and the run's adapter on top */
  readonly model: LlamaModel;
  /** the base's tokenizer */
  readonly tokenizer: Tokenizer;
  /** the run's latent pool, attached to the model, when it serves with one */
  readonly pool?: LatentPool;
  /** earlier rounds folded beneath the adapter (0 for a single run) */
  readonly rounds: number;
  /**
   * generateText() on the run's model, each prompt with its retrieved latent increments when the run has a pool.
   * @param prompts - one or more prompts, batched together.
   * @param options - generateText's options (not `latent`, which the pool provides).
   * @returns one result per prompt, in order.
   */
  generate(prompts: string[], options?: Omit<GenerateTextOptions, 'latent'>): Promise<GeneratedText[]>;
  /** frees the model and the pool */
  dispose(): void;
}

/**
 * Loads a finished run folder (`train({ outDir })` or `jfa train --out`) ready to serve: its base
 * model, the earlier rounds of a continued run, its adapter, and its latent pool when it was trained
 * to serve with one.
 * @param dir - the run folder (or its `adapter/` folder).
 * @param o - the base model directory when the run does not record one, dtype, device, latent.
 * @returns the loaded run; dispose it when done.
 * @throws (rejects with) ModelFormatError for a folder that is not a finished run or whose files do not fit; OptionError when no base model is recorded or given.
 * @example
 * ```ts
 * using run = await loadRun('runs/jfa');
 * const [answer] = await run.generate(['Add the numbers.\n2 3'], { maxNewTokens: 16 });
 * console.log(answer?.text, run.pool ? '(with its latent pool)' : '');
 * ```
 */
export async function loadRun(dir: string, o: LoadRunOptions = {}): Promise<LoadedRun> {
  const folder = basename(resolve(dir)) === 'adapter' ? dirname(resolve(dir)) : resolve(dir);
  let prev;
  try {
    prev = readRun(folder);
  } catch (e) {
    throw new ModelFormatError(`loadRun: ${(e as Error).message.replace(/^continueFrom: /, '')}`, { cause: e });
  }
  const recorded = prev.base && (isAbsolute(prev.base) ? prev.base : resolve(folder, prev.base));
  const base = o.model ?? recorded;
  if (!base) throw new OptionError(`loadRun: ${folder} records no base model (it was trained on a model made in memory); pass { model: DIR }`);
  const model = await LlamaModel.loadAsync(base, { ...(o.dtype ? { dtype: o.dtype } : {}), ...(o.device ? { device: o.device } : {}) });
  let pool: LatentPool | undefined;
  let rounds: number;
  try {
    rounds = loadAdapterWithRounds(model, `${folder}/adapter`);
    if (prev.pool && o.latent !== false) pool = LatentPool.load(prev.pool, model);
  } catch (e) {
    model.dispose();
    throw new ModelFormatError(`loadRun: ${folder}: ${(e as Error).message}`, { cause: e });
  }
  const tokenizer = Tokenizer.fromDir(base);
  const dispose = () => {
    pool?.dispose();
    model.dispose();
  };
  return {
    run: folder,
    base,
    model,
    tokenizer,
    ...(pool ? { pool } : {}),
    rounds,
    async generate(prompts, options = {}) {
      const latent = pool?.retrieve(model, tokenizer, prompts.map((prompt) => ({ task: '', prompt })));
      try {
        return await generateText(model, tokenizer, prompts, { ...options, ...(latent ? { latent } : {}) });
      } finally {
        latent?.indices.dispose();
        latent?.weights.dispose();
      }
    },
    dispose,
    [Symbol.dispose]: dispose,
  };
}

// Scoring a model on the probes (lib/data/probes.ts): exact match of greedy generations, one
// share per general skill. A base is ready for LoRA when it copies and looks up, not when its loss is low.
import { PROBE_NAMES, type ProbeName, probeRecords } from '../data/probes.js';
import { type LlamaModel } from '../model/llama.js';
import { type Tokenizer } from '../model/tokenizer.js';
import { evaluateNew, type EvalOptions } from './evaluate.js';

/** Options of {@link probe}. */
export interface ProbeOptions extends Pick<EvalOptions, 'batch' | 'adapters' | 'latent'> {
  /** records per probe (default 100) */
  perProbe?: number | undefined;
  /** called after each probe with its name and share right */
  onProbe?: ((name: ProbeName, score: number) => void) | undefined;
}

/**
 * Each probe's share of exact matches (0 to 1), by greedy generation on held-out records.
 * @param model - the model to score.
 * @param tokenizer - its tokenizer.
 * @param o - records per probe, batch size, adapters, progress.
 * @returns a promise of one score per probe.
 * @throws (rejects with) RangeError for a bad count or batch.
 * @example
 * ```ts
 * const scores = await probe(model, tokenizer, { perProbe: 50 });
 * console.log(scores.copy, scores.lookup);
 * ```
 */
export async function probe(model: LlamaModel, tokenizer: Tokenizer, o: ProbeOptions = {}): Promise<Record<ProbeName, number>> {
  const sets = probeRecords(o.perProbe ?? 100);
  const out = {} as Record<ProbeName, number>;
  for (const name of PROBE_NAMES) {
    const records = sets[name];
    // room for the longest reference and a little more: a model that runs on is wrong, not cut short
    const longest = Math.max(...records.map((r) => tokenizer.encode(r.output, { addSpecialTokens: false }).length));
    out[name] = (await evaluateNew(model, tokenizer, records, { batch: o.batch ?? 50, maxNewTokens: longest + 4, adapters: o.adapters, latent: o.latent })).exactMatch;
    o.onProbe?.(name, out[name]);
  }
  return out;
}

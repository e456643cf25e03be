// exportGguf(): a model directory, optionally with a trained adapter folded in (mergeAdapter's
// rules: every round of a continued run, 'retrieve' pools refused), as one GGUF file for llama.cpp,
// Ollama and node-llama-cpp.
import { basename, resolve } from 'node:path';

import { ModelFormatError, OptionError } from '../errors.js';
import { GGUF_TENSOR_TYPES, type GgufTensorType, writeGguf } from '../model/gguf.js';
import { llamaGguf, llamaLoraGguf } from '../model/gguf-llama.js';
import { readPeftAdapter } from '../model/peft.js';
import { LlamaModel } from '../model/llama.js';
import { adapterChain, claimOutput, loadMerged, refuseRetrievePool } from './merge.js';

/** Options of {@link exportGguf}. */
export interface ExportGgufOptions {
  /** the base model directory (Hugging Face layout, model_type llama, byte-level BPE tokenizer) */
  model: string;
  /** a PEFT adapter directory to fold in first (a continued run's brings its earlier rounds) */
  adapter?: string | undefined;
  /** the .gguf file to write; it must not exist */
  out: string;
  /** the element type of the 2-D weights: 'f32', 'f16' (default) or 'q8_0'; norms stay f32 */
  type?: GgufTensorType | undefined;
  /**
   * Write `adapter` alone as a GGUF LoRA adapter (f32 factors) instead of a merged model, for
   * llama.cpp's --lora and node-llama-cpp's createContext({ lora }) on a GGUF of the base. A
   * continued run's adapter is refused (its earlier rounds belong in the base: export it merged).
   */
  asAdapter?: boolean | undefined;
}

/** What {@link exportGguf} wrote. */
export interface ExportGgufResult {
  /** the file (absolute) */
  out: string;
  /** its size in bytes */
  bytes: number;
  /** the element type of its 2-D weights */
  type: GgufTensorType;
  /** the adapters folded in, oldest first (none without `adapter`) */
  adapters: string[];
  /** wall time in milliseconds, loading included */
  ms: number;
}

/**
 * Writes a model (with an adapter folded in) as a GGUF v3 file in llama.cpp's 'llama' layout: its
 * hyperparameters, its weights under llama.cpp's names (q and k rows interleaved for its rotary
 * layout), and its byte-level BPE tokenizer with the chat template. Nothing is left at `out` when it fails.
 * @param o - the model, the adapter, the file and the element type.
 * @returns the file, its size and type, and the adapters folded in.
 * @throws (rejects with) OptionError for an unknown type, or an `out` that exists or cannot be written;
 *   ModelFormatError for an adapter trained with a 'retrieve' latent pool or of another base, or a
 *   model or tokenizer the export cannot express.
 * @example
 * ```ts
 * const { out, bytes } = await exportGguf({ model: 'models/jfa-base', adapter: 'runs/jfa/adapter', out: 'jfa.q8_0.gguf', type: 'q8_0' });
 * console.log(`${out}: ${(bytes / 2 ** 20).toFixed(1)} MiB`);
 * ```
 */
export async function exportGguf(o: ExportGgufOptions): Promise<ExportGgufResult> {
  const what = 'export gguf';
  const type = o.type ?? 'f16';
  if (!(GGUF_TENSOR_TYPES as readonly string[]).includes(type)) throw new OptionError(`${what}: type must be one of ${GGUF_TENSOR_TYPES.join(', ')}, got ${JSON.stringify(type)}`);
  const started = performance.now();
  claimOutput(o.out, what, 'file');
  if (o.asAdapter) return exportLoraGguf(o, what, started);
  const { model, adapters } = o.adapter ? await loadMerged(o.model, o.adapter, what) : { model: await LlamaModel.loadAsync(o.model), adapters: [] };
  try {
    const { metadata, tensors } = llamaGguf(model, o.model, { type });
    const bytes = writeGguf(resolve(o.out), metadata, tensors);
    return { out: resolve(o.out), bytes, type, adapters, ms: performance.now() - started };
  } finally {
    model.dispose();
  }
}

/** exportGguf with asAdapter: the adapter's factors alone, in llama.cpp's LoRA layout. */
async function exportLoraGguf(o: ExportGgufOptions, what: string, started: number): Promise<ExportGgufResult> {
  if (!o.adapter) throw new OptionError(`${what}: asAdapter needs an adapter`);
  const chain = adapterChain(o.adapter);
  if (chain.length > 1)
    throw new OptionError(`${what}: ${o.adapter} continues ${chain.length - 1} earlier round(s) that belong beneath it; export it merged (without --as-adapter)`);
  refuseRetrievePool(chain[0]!, what);
  using model = await LlamaModel.loadAsync(o.model);
  let read;
  try {
    read = readPeftAdapter(chain[0]!, model.config);
  } catch (e) {
    if (e instanceof ModelFormatError) throw new ModelFormatError(`${what}: ${e.message}`, { cause: e });
    throw e;
  }
  try {
    const { metadata, tensors } = llamaLoraGguf(read.factors, read.shape, model, basename(resolve(chain[0]!, '..')));
    const bytes = writeGguf(resolve(o.out), metadata, tensors);
    return { out: resolve(o.out), bytes, type: 'f32', adapters: chain, ms: performance.now() - started };
  } finally {
    Object.values(read.factors).forEach((t) => t.disposed || t.dispose());
  }
}

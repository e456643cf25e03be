// A generation in progress, stepped from JS: the native session (core/decode_session.h) holds the
// KV cache and the sampler between steps, so a caller can look at the tokens between them (stream
// them, look for stop strings, give up) while the decoding loop itself stays native.
import { type NativeDecoder } from '../native.js';

/**
 * A generation in progress, made by {@link LlamaModel.decoder} after the prompt's prefill. Each
 * {@link Decoder.step} generates a few more tokens per row on the libuv pool. The model cannot be
 * changed (addLora, mergeLora, ...) until the decoder is done or disposed; dispose it when you stop
 * early (`using` does it). Owns native memory: the KV cache, freed once done.
 *
 * @example
 * ```ts
 * const { ids, attentionMask } = tokenizer.batch(['Once upon a time']);
 * using decoder = await model.decoder(ids, { attentionMask, maxNewTokens: 64, eosTokenIds: [tokenizer.eosTokenId!] });
 * const text = new IncrementalText((ids) => tokenizer.decode(ids)); // whole characters only
 * while (!decoder.done) {
 *   const [row] = await decoder.step(4);
 *   for (const id of row!) if (id !== tokenizer.eosTokenId) process.stdout.write(text.push(id));
 * }
 * process.stdout.write(text.flush());
 * ```
 */
export class Decoder implements Disposable {
  /** @internal */
  constructor(private readonly handle: NativeDecoder) {}

  /** Every row has stopped, maxNewTokens were made, or the decoder was disposed. */
  get done(): boolean {
    return this.handle.done;
  }
  /** Sequences (prompts) in the batch. */
  get batchSize(): number {
    return this.handle.batchSize;
  }
  /** Tokens made per row so far. */
  get produced(): number {
    return this.handle.produced;
  }

  /**
   * Generates up to n more tokens per row.
   * @param n - tokens per row at most (default 1).
   * @returns one array of token ids per row, all of one length (at most n, 0 once done); padTokenId
   *   in rows that stopped (end-of-sequence token, or {@link Decoder.stop}).
   * @throws (rejects with) TypeError once disposed; Error while another step runs.
   * @example
   * ```ts
   * declare const decoder: Decoder;
   * const rows = await decoder.step(8); // rows[r] holds row r's next tokens
   * ```
   */
  async step(n = 1): Promise<number[][]> {
    return this.handle.stepAsync(n);
  }

  /**
   * Stops rows now (e.g. their text reached a stop string): they take padTokenId from here on and
   * leave the batch's compute. The decoder is done once every row has stopped.
   * @param rows - indices into the batch.
   * @throws RangeError for a row outside the batch; Error while a step runs.
   * @example
   * ```ts
   * declare const decoder: Decoder;
   * decoder.stop([1]);
   * ```
   */
  stop(rows: number[]): void {
    this.handle.stop(rows);
  }

  /**
   * Frees the KV cache and the model now; a running step ends after its current token and
   * resolves with what it made.
   * @example
   * ```ts
   * declare const decoder: Decoder;
   * decoder.dispose();
   * ```
   */
  dispose(): void {
    this.handle.dispose();
  }
  /**
   * {@link Decoder.dispose}, for `using` declarations.
   * @example
   * ```ts
   * { using decoder = await model.decoder(ids); }
   * ```
   */
  [Symbol.dispose](): void {
    this.dispose();
  }
}

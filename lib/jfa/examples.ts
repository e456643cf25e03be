// Records to token tensors. New-task records train on their output only (prompt and padding
// masked out of the loss); flashbacks are prompts, all of whose positions enter the divergence.
import { type FlashbackRecord, type InstanceRecord } from '../data/records.js';
import { padRows, type Tokenizer } from '../model/tokenizer.js';
import { tensor, type Tensor } from '../tensor.js';

/**
 * The prompt text of a record: its instruction and input, or a flashback's `prompt`.
 * @param r - a new-task, old-task or flashback record.
 * @returns the text the model is prompted with.
 * @example
 * ```ts
 * promptText({ task: 't', instruction: 'Add.', input: '2 3', output: '5' }); // 'Add.\n2 3\n'
 * ```
 */
export function promptText(r: InstanceRecord | FlashbackRecord): string {
  return 'prompt' in r ? r.prompt : `${r.instruction}\n${r.input}\n`;
}

/** Records tokenized for supervised fine-tuning: what {@link sftBatch} returns. */
export interface SftBatch {
  /** (b, t) int64, right-padded */
  ids: Tensor;
  /** (b, t) uint8 */
  attentionMask: Tensor;
  /** (b, t) int64: the next token where it is an output token, else -100 */
  targets: Tensor;
  /** target tokens */
  tokens: number;
}

/** Prompts tokenized: what {@link promptBatch} returns. */
export interface PromptBatch {
  /** (b, t) int64, right-padded */
  ids: Tensor;
  /** (b, t) uint8 */
  attentionMask: Tensor;
  /** real tokens */
  tokens: number;
}

/**
 * Tokenizes new-task records as prompt + output + EOS; `promptLoss` makes every next token a target. Past maxTokens the prompt loses its start
 * (after the first token, BOS), never the output: a truncated target teaches nothing.
 * @param tokenizer - the model's tokenizer.
 * @param records - new-task records.
 * @param maxTokens - the longest row.
 * @param options - promptLoss: train on the prompt's tokens too (language modelling).
 * @returns ids, mask and targets (b, t), and the number of target tokens; dispose the tensors when done.
 * @example
 * ```ts
 * const b = sftBatch(tokenizer, records.slice(0, 8), 256);
 * const loss = tokenCrossEntropy(model.logits(b.ids, { attentionMask: b.attentionMask }), b.targets);
 * ```
 */
export function sftBatch(tokenizer: Tokenizer, records: InstanceRecord[], maxTokens: number, options: { promptLoss?: boolean } = {}): SftBatch {
  const eos = tokenizer.eosTokenId;
  const rows: number[][] = [];
  const starts: number[] = [];
  for (const r of records) {
    const fullPrompt = tokenizer.encode(promptText(r));
    const answer = [...tokenizer.encode(r.output, { addSpecialTokens: false }), ...(eos === undefined ? [] : [eos])].slice(0, maxTokens - 1);
    const room = maxTokens - answer.length;
    const prompt = fullPrompt.length <= room ? fullPrompt : [fullPrompt[0]!, ...fullPrompt.slice(fullPrompt.length - (room - 1))];
    rows.push([...prompt, ...answer]);
    starts.push(prompt.length);
  }
  const { ids, attentionMask } = padRows(rows, tokenizer.padTokenId ?? 0, 'right');
  const width = ids.shape[1]!;
  const targets = new BigInt64Array(rows.length * width).fill(-100n);
  let tokens = 0;
  rows.forEach((row, b) => {
    // position i predicts token i + 1; only tokens of the output (and EOS) are targets, unless the
    // prompt's are too (language-model pretraining)
    for (let i = options.promptLoss ? 0 : Math.max(starts[b]! - 1, 0); i + 1 < row.length; i++) {
      targets[b * width + i] = BigInt(row[i + 1]!);
      tokens += 1;
    }
  });
  return { ids, attentionMask, targets: tensor(targets, [rows.length, width]), tokens };
}

/**
 * Tokenizes prompts (flashbacks, or eval prompts), right-padded, truncated to maxTokens.
 * @param tokenizer - the model's tokenizer.
 * @param records - records whose {@link promptText} to tokenize.
 * @param maxTokens - the longest row.
 * @returns ids and mask (b, t), and the number of real tokens.
 * @example
 * ```ts
 * const { ids, attentionMask } = promptBatch(tokenizer, flashbacks, 256);
 * ```
 */
export function promptBatch(tokenizer: Tokenizer, records: Array<InstanceRecord | FlashbackRecord>, maxTokens: number): PromptBatch {
  const rows = records.map((r) => tokenizer.encode(promptText(r)).slice(0, maxTokens));
  return { ...padRows(rows, tokenizer.padTokenId ?? 0, 'right'), tokens: rows.reduce((s, r) => s + r.length, 0) };
}

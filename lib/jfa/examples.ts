// Records to token tensors. New-task records train on their output only (prompt and padding
// masked out of the loss); flashbacks are prompts, all of whose positions enter the divergence.
import { type FlashbackRecord, type InstanceRecord } from '../data/records.js';
import { padRows, type Tokenizer } from '../model/tokenizer.js';
import { tensor, type Tensor } from '../tensor.js';

/** The prompt text of a record: its instruction and input, or a flashback's `prompt`. */
export function promptText(r: InstanceRecord | FlashbackRecord): string {
  return 'prompt' in r ? r.prompt : `${r.instruction}\n${r.input}\n`;
}

export interface SftBatch {
  ids: Tensor; // (b, t) int64, right-padded
  attentionMask: Tensor; // (b, t) uint8
  targets: Tensor; // (b, t) int64: the next token where it is an output token, else -100
  tokens: number; // target tokens
}

export interface PromptBatch {
  ids: Tensor;
  attentionMask: Tensor;
  tokens: number;
}

/**
 * Tokenizes new-task records as prompt + output + EOS; `promptLoss` makes every next token a target. Past maxTokens the prompt loses its start
 * (after the first token, BOS), never the output: a truncated target teaches nothing.
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

/** Tokenizes prompts (flashbacks, or eval prompts), right-padded, truncated to maxTokens. */
export function promptBatch(tokenizer: Tokenizer, records: Array<InstanceRecord | FlashbackRecord>, maxTokens: number): PromptBatch {
  const rows = records.map((r) => tokenizer.encode(promptText(r)).slice(0, maxTokens));
  return { ...padRows(rows, tokenizer.padTokenId ?? 0, 'right'), tokens: rows.reduce((s, r) => s + r.length, 0) };
}

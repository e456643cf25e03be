// Records to token tensors. New-task records train on their output only (prompt and padding
// masked out of the loss); flashbacks are prompts, all of whose positions enter the divergence.
import { type FlashbackRecord, type InstanceRecord } from '../data/records.js';
import { type Tokenizer } from '../model/tokenizer.js';
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

function pad(rows: number[][], padId: number) {
  const width = Math.max(...rows.map((r) => r.length));
  const ids = new BigInt64Array(rows.length * width).fill(BigInt(padId));
  const mask = new Uint8Array(rows.length * width);
  rows.forEach((row, b) => row.forEach((id, i) => ((ids[b * width + i] = BigInt(id)), (mask[b * width + i] = 1))));
  return { ids, mask, width };
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
  const { ids, mask, width } = pad(rows, tokenizer.padTokenId ?? 0);
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
  const shape = [rows.length, width];
  return { ids: tensor(ids, shape), attentionMask: tensor(mask, shape), targets: tensor(targets, shape), tokens };
}

/** Tokenizes prompts (flashbacks, or eval prompts), right-padded, truncated to maxTokens. */
export function promptBatch(tokenizer: Tokenizer, records: Array<InstanceRecord | FlashbackRecord>, maxTokens: number): PromptBatch {
  const rows = records.map((r) => tokenizer.encode(promptText(r)).slice(0, maxTokens));
  const { ids, mask, width } = pad(rows, tokenizer.padTokenId ?? 0);
  return { ids: tensor(ids, [rows.length, width]), attentionMask: tensor(mask, [rows.length, width]), tokens: rows.reduce((s, r) => s + r.length, 0) };
}

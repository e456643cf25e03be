// Self-replay: replay without old data. The frozen base answers every flashback prompt once,
// greedily, before training; those answers are SFT examples beside the new tasks. The answers are
// kept in the run folder, so a resumed run trains on the very same text (bit-identical) instead of
// generating again.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import { type FlashbackRecord, type InstanceRecord } from '../data/records.js';
import { CheckpointError } from '../errors.js';
import { generateText } from '../model/generate.js';
import { type LlamaModel } from '../model/llama.js';
import { type Tokenizer } from '../model/tokenizer.js';
import { writeFileAtomic } from '../util/files.js';
import { promptText } from './examples.js';

/** The run folder's file of the base's answers: one JSON line per flashback, in the plan's order. */
export const SELF_REPLAY_FILE = 'self-replay.jsonl';

/** Prompts answered together. */
const BATCH = 16;

/** A flashback with the base's answer: trained on as a new-task record (its prompt is the flashback's). */
export type SelfReplayRecord = InstanceRecord | (Extract<FlashbackRecord, { prompt: string }> & { output: string });

/**
 * The frozen base's greedy answer to each flashback prompt, as SFT records: read from the run
 * folder when resuming, else generated (adapters off) and written there.
 * @param model - the base model (its adapters, if any, are not used).
 * @param tokenizer - its tokenizer.
 * @param flashbacks - the prompts, in the plan's order.
 * @param maxNewTokens - tokens generated per answer at most.
 * @param cache - the run folder and whether the run resumes (then the file must be there and match the prompts).
 * @returns one record per flashback, in order.
 * @throws CheckpointError when a resumed run's file is missing or answers other prompts.
 */
export async function selfReplayRecords(
  model: LlamaModel,
  tokenizer: Tokenizer,
  flashbacks: FlashbackRecord[],
  maxNewTokens: number,
  cache: { dir?: string | undefined; resume: boolean; write: boolean },
): Promise<SelfReplayRecord[]> {
  const file = cache.dir === undefined ? undefined : join(cache.dir, SELF_REPLAY_FILE);
  if (file && cache.resume) return readAnswers(file, flashbacks);
  const records: SelfReplayRecord[] = [];
  for (let i = 0; i < flashbacks.length; i += BATCH) {
    const chunk = flashbacks.slice(i, i + BATCH);
    const answers = await generateText(model, tokenizer, chunk.map(promptText), { maxNewTokens, adapters: false });
    chunk.forEach((f, j) => records.push(answered(f, answers[j]!.text)));
  }
  if (file && cache.write) writeFileAtomic(file, records.map((r) => `${JSON.stringify(r)}\n`).join(''));
  return records;
}

function answered(f: FlashbackRecord, output: string): SelfReplayRecord {
  return 'prompt' in f ? { task: f.task, prompt: f.prompt, output } : { task: f.task, instruction: f.instruction, input: f.input, output };
}

/** A resumed run's answers: the file its first part wrote, for the same prompts. */
function readAnswers(file: string, flashbacks: FlashbackRecord[]): SelfReplayRecord[] {
  if (!existsSync(file)) throw new CheckpointError(`train: the checkpoint is incomplete: ${file} (the base's answers this run trains on) is missing`);
  const lines = readFileSync(file, 'utf8').split('\n').filter((l) => l !== '');
  let records: SelfReplayRecord[];
  try {
    records = lines.map((l) => JSON.parse(l) as SelfReplayRecord);
  } catch (e) {
    throw new CheckpointError(`train: ${file} is not JSON lines (${(e as Error).message}): the checkpoint is damaged`);
  }
  const same = records.length === flashbacks.length && records.every((r, i) => typeof r?.output === 'string' && promptText(r) === promptText(flashbacks[i]!));
  if (!same) throw new CheckpointError(`train: ${file} answers other prompts than this run's flashbacks: it belongs to another run`);
  return records;
}

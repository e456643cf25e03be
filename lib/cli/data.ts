// `jfa data import` and `jfa data flashbacks`: the paper's datasets in their published formats to
// our JSONL, and flashback prompts drawn from old-task files. Skips go to stderr as "file:line:
// reason; skipped", the summary to stdout (or everything as one JSON object with --json).
import { existsSync } from 'node:fs';
import { join } from 'node:path';

import { drawFlashbacks, formatSkip, type ImportFormat, importFiles, type ImportOptions, importSummary, parseTaskList, splitByTask } from '../data/importers/index.js';
import { DataError, parseJsonl, writeJsonl } from '../data/jsonl.js';
import type { FlashbackRecord, InstanceRecord } from '../data/records.js';
import { readJson, readText } from '../util/files.js';

/** Skip lines shown on stderr before "... and N more". */
const SHOWN = 20;

function report(lines: readonly string[], more: string): void {
  for (const l of lines.slice(0, SHOWN)) console.error(l);
  if (lines.length > SHOWN) console.error(`... and ${lines.length - SHOWN} more ${more}`);
}

export interface ImportCommand {
  format: ImportFormat;
  inputs: string[];
  out: string;
  task?: string;
  maxPerTask?: number;
  examples?: number;
  testTasks?: string;
  split?: number;
  testOut?: string;
  seed?: number;
  model?: string;
  json?: boolean;
}

/** The chat template, BOS and EOS of a model directory's tokenizer_config.json. */
function chatTemplateOf(dir: string): Pick<ImportOptions, 'template' | 'bosToken' | 'eosToken'> {
  const file = join(dir, 'tokenizer_config.json');
  if (!existsSync(file)) throw new Error(`${file}: missing (--model must be a model directory with a tokenizer_config.json)`);
  const config = readJson<Record<string, unknown>>(file);
  const text = (v: unknown) => (typeof v === 'string' ? v : typeof v === 'object' && v !== null && typeof (v as { content?: unknown }).content === 'string' ? (v as { content: string }).content : undefined);
  if (typeof config.chat_template !== 'string') throw new Error(`${file}: no chat_template`);
  return { template: config.chat_template, bosToken: text(config.bos_token), eosToken: text(config.eos_token) };
}

/** `jfa data import`: reads the inputs, writes --out (and --test-out with a task split), reports skips. */
export function runImport(o: ImportCommand): void {
  if ((o.testTasks !== undefined || o.split !== undefined) !== (o.testOut !== undefined)) {
    throw new Error('--test-out goes with --test-tasks or --split (the held-out tasks are written there)');
  }
  if (o.testTasks !== undefined && o.split !== undefined) throw new Error('give --test-tasks or --split, not both');
  if (o.model !== undefined && o.format !== 'chat') throw new Error(`--model is for --format chat (its chat template), not ${o.format}`);
  const testTasks = o.testTasks !== undefined ? parseTaskList(readText(o.testTasks)) : undefined;
  if (testTasks?.length === 0) throw new Error(`${o.testTasks}: no task names in it`);
  const options: ImportOptions = { task: o.task, maxPerTask: o.maxPerTask, examples: o.examples, seed: o.seed, ...(o.model ? chatTemplateOf(o.model) : {}) };
  const result = importFiles(o.format, o.inputs, options);
  const skips = result.skipped.map(formatSkip);
  const outputs: Array<{ file: string; records: number; tasks: number }> = [];
  const split = testTasks ? splitByTask(result.records, { testTasks }) : o.split !== undefined ? splitByTask(result.records, { fraction: o.split, seed: o.seed }) : undefined;
  const notes = [...result.notes, ...(split?.missing.map((t) => `${o.testTasks}: test task ${t} is not in the input`) ?? [])];
  const write = (file: string, records: InstanceRecord[]) => {
    writeJsonl(file, records);
    outputs.push({ file, records: records.length, tasks: new Set(records.map((r) => r.task)).size });
  };
  if (split) {
    if (split.train.length === 0) throw new DataError([`every task of the input is a test task: nothing to write to ${o.out}`]);
    write(o.out, split.train);
    write(o.testOut!, split.test);
  } else {
    write(o.out, result.records);
  }
  if (o.json) {
    console.log(JSON.stringify({ format: o.format, records: result.records.length, files: result.files, skipped: skips, notes, outputs, ...(split ? { trainTasks: split.trainTasks, testTasks: split.testTasks } : {}) }));
    return;
  }
  report(skips, 'skipped (--json lists all)');
  report(notes, 'notes');
  console.log(`${o.format}: ${importSummary(result)}`);
  for (const f of outputs) console.log(`  ${f.records} record${f.records === 1 ? '' : 's'} of ${f.tasks} task${f.tasks === 1 ? '' : 's'} -> ${f.file}`);
}

export interface FlashbacksCommand {
  inputs: string[];
  out: string;
  perSuite: number;
  seed?: number;
  by?: 'suite' | 'task';
  json?: boolean;
}

/** `jfa data flashbacks`: a seeded draw of distinct prompts per suite from old-task (or flashback) files. */
export function runFlashbacks(o: FlashbacksCommand): void {
  const records: Array<InstanceRecord | FlashbackRecord> = [];
  for (const file of o.inputs) {
    let text: string;
    try {
      text = readText(file);
    } catch (e) {
      throw new DataError([(e as Error).message]);
    }
    // Old-task records (with outputs), or else a flashback file (prompts only) as it is.
    try {
      records.push(...parseJsonl(text, file, 'instance'));
    } catch (instanceError) {
      try {
        records.push(...parseJsonl(text, file, 'flashback'));
      } catch {
        throw instanceError;
      }
    }
  }
  const { flashbacks, notes } = drawFlashbacks(records, { perSuite: o.perSuite, seed: o.seed, by: o.by });
  writeJsonl(o.out, flashbacks);
  const suites = [...new Set(flashbacks.map((f) => (o.by === 'task' ? f.task : f.task.split('/')[0]!)))];
  if (o.json) {
    console.log(JSON.stringify({ out: o.out, flashbacks: flashbacks.length, suites, notes }));
    return;
  }
  report(notes, 'notes');
  console.log(`${flashbacks.length} flashbacks from ${suites.length} ${o.by === 'task' ? 'task' : 'suite'}${suites.length === 1 ? '' : 's'} (${suites.join(', ')}) -> ${o.out}`);
}

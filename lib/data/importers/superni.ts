// Super-NaturalInstructions task files to new-task records: the task's Definition is the
// instruction (optionally with its first positive examples), each Instance one record whose output is
// its first reference. Instances per task are capped by a seeded sample, as the paper (100 per task).
import { basename } from 'node:path';

import { DataError } from '../jsonl.js';
import type { InstanceRecord } from '../records.js';
import { createRng, hashString } from '../rng.js';
import { elementLines, type FileCount, type ImportResult, isObject, notAnObject, parseInput, readInput, type Skip } from './common.js';

/** Options of {@link importSuperNi}. */
export interface SuperNiOptions {
  /** Instances kept per task at most, a seeded sample in file order (default 100, the paper's cap; 0: all). */
  maxPerTask?: number;
  /** Positive examples appended to the definition in the instruction (default 0: the definition only). */
  examples?: number;
  /** Seed of the per-task sample (default 0). */
  seed?: number;
}

/**
 * A SuperNI task name from its file name: "task001_quoref_question_generation.json" -> "task001_quoref_question_generation".
 * @param file - the task file's path (its directory is ignored).
 * @returns the file's base name without a ".json" suffix.
 * @example
 * ```ts
 * superNiTaskName('natural-instructions/tasks/task001_quoref_question_generation.json'); // 'task001_quoref_question_generation'
 * ```
 */
export function superNiTaskName(file: string): string {
  return basename(file).replace(/\.json$/i, '');
}

function definitionOf(value: unknown): string | undefined {
  const parts = typeof value === 'string' ? [value] : Array.isArray(value) ? value.filter((v): v is string => typeof v === 'string') : [];
  const text = parts.map((p) => p.trim()).filter(Boolean).join('\n');
  return text === '' ? undefined : text;
}

function examplesOf(value: unknown, k: number): string {
  if (k === 0 || !Array.isArray(value)) return '';
  const usable = value.filter((e): e is { input: string; output: string } => isObject(e) && typeof e.input === 'string' && typeof e.output === 'string');
  return usable
    .slice(0, k)
    .map((e, i) => `\n\nPositive Example ${i + 1} -\nInput: ${e.input.trim()}\nOutput: ${e.output.trim()}`)
    .join('');
}

/**
 * Reads SuperNI task files (one JSON object per task, with `Definition`, `Positive Examples` and
 * `Instances` of `id`, `input` and `output[]`). Instances without an input or a non-empty output
 * are skipped and reported with their line; a task without a definition is skipped whole.
 * @param paths - the task files, one task each.
 * @param options - the instances kept per task, positive examples in the instruction, and the sample's seed.
 * @returns the records (format 'superni', task = file name), the skips, a count per file, and a note per capped task.
 * @throws DataError when a file cannot be read, is empty, is not JSON, or has no `Instances` array, or when nothing is imported.
 * @throws RangeError when `maxPerTask` or `examples` is not a non-negative integer.
 * @example
 * ```ts
 * const { records, notes } = importSuperNi(['tasks/task001_quoref_question_generation.json'], { maxPerTask: 100, examples: 2 });
 * ```
 */
export function importSuperNi(paths: readonly string[], options: SuperNiOptions = {}): ImportResult {
  const cap = options.maxPerTask ?? 100;
  const k = options.examples ?? 0;
  if (!Number.isInteger(cap) || cap < 0) throw new RangeError(`maxPerTask must be a non-negative integer, got ${cap}`);
  if (!Number.isInteger(k) || k < 0) throw new RangeError(`examples must be a non-negative integer, got ${k}`);
  const result: ImportResult = { records: [], skipped: [], files: [], notes: [] };
  for (const file of paths) {
    const contents = parseInput(readInput(file), file);
    if (contents.kind !== 'json' || !isObject(contents.value) || !Array.isArray(contents.value.Instances)) {
      throw new DataError([`${file}: not a Super-NaturalInstructions task file (expected one JSON object with an 'Instances' array)`]);
    }
    const task = contents.value;
    const name = superNiTaskName(file);
    const instances = task.Instances as unknown[];
    const definition = definitionOf(task.Definition);
    const skipped: Skip[] = [];
    const kept: InstanceRecord[] = [];
    if (definition === undefined) {
      skipped.push({ file, line: 1, reason: `task ${name} has no 'Definition' (${instances.length} instance${instances.length === 1 ? '' : 's'})` });
    } else {
      const instruction = definition + examplesOf(task['Positive Examples'], k);
      const lines = elementLines(contents.text, ['Instances']);
      instances.forEach((inst, i) => {
        const line = lines[i] ?? 1;
        const id = isObject(inst) && typeof inst.id === 'string' ? `instance ${inst.id}: ` : `Instances[${i}]: `;
        if (!isObject(inst)) return void skipped.push({ file, line, reason: `${id}${notAnObject(inst)}` });
        if (typeof inst.input !== 'string') return void skipped.push({ file, line, reason: `${id}field 'input' must be a string` });
        const outputs = typeof inst.output === 'string' ? [inst.output] : Array.isArray(inst.output) ? inst.output : [];
        const output = outputs.find((o): o is string => typeof o === 'string' && o.trim() !== '');
        if (output === undefined) return void skipped.push({ file, line, reason: `${id}no non-empty output` });
        kept.push({ task: name, instruction, input: inst.input, output, format: 'superni' });
      });
    }
    let records = kept;
    if (cap > 0 && kept.length > cap) {
      const chosen = new Set(createRng(hashString(`${options.seed ?? 0}:${name}`)).sample([...kept.keys()], cap));
      records = kept.filter((_, i) => chosen.has(i));
      result.notes.push(`${file}: task ${name} has ${kept.length} usable instances; kept a sample of ${cap}`);
    }
    result.records.push(...records);
    result.skipped.push(...skipped);
    result.files.push({ file, records: records.length, skipped: skipped.length } satisfies FileCount);
  }
  if (result.records.length === 0) throw new DataError([`no SuperNI instances imported from ${paths.length} file${paths.length === 1 ? '' : 's'} (${result.skipped.length} skipped)`]);
  return result;
}

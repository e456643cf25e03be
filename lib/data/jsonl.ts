// JSONL in the formats of DESIGN.md's "Data" contract. Reading checks every line and fails as a
// whole, naming file and line, so a bad dataset is never half-used.
import { z } from 'zod';

import { readText, writeFileAtomic } from '../util/files.js';
import type { FlashbackRecord, InstanceRecord } from './records.js';

/** Which record shape a JSONL file holds: new-task/eval instances, or flashback prompts. */
export type RecordKind = 'instance' | 'flashback';

/** Every problem found in a file, one "file:line: what" per entry. */
export class DataError extends Error {
  /**
   * An error listing the problems (the first 20 in the message).
   * @param problems - one "file:line: what" per entry.
   * @example
   * ```ts
   * throw new DataError(['data.jsonl:3: missing field \'output\'']);
   * ```
   */
  constructor(readonly problems: string[]) {
    const shown = problems.slice(0, 20);
    super(problems.length > shown.length ? `${shown.join('\n')}\n... and ${problems.length - shown.length} more` : shown.join('\n'));
    this.name = 'DataError';
  }
}

/**
 * Writes one JSON object per line to a temporary file, fsyncs, then renames it into place.
 * @param path - the file to write.
 * @param records - instance or flashback records.
 * @throws Error naming the path when it cannot be written.
 * @example
 * ```ts
 * writeJsonl('new-train.jsonl', [{ task: 'add', instruction: 'Add the numbers.', input: '2 3', output: '5' }]);
 * ```
 */
export function writeJsonl(path: string, records: readonly (InstanceRecord | FlashbackRecord)[]): void {
  writeFileAtomic(path, records.map((r) => `${JSON.stringify(r)}\n`).join(''));
}

const describe = (v: unknown): string =>
  v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v === 'number' && !Number.isFinite(v) ? String(v) : typeof v;

// Fields a kind does not use are dropped unchecked, as unknown fields are.
const text = z.string();
const embedding = z.array(z.number()).min(1).optional();
const instance: z.ZodType<InstanceRecord> = z.object({ task: text, instruction: text, input: text, output: text, answer: text.optional(), embedding });
const pairFlashback: z.ZodType<FlashbackRecord> = z.object({ task: text, instruction: text, input: text, embedding });
const promptFlashback: z.ZodType<FlashbackRecord> = z.object({ task: text, prompt: text, embedding });

/** A zod issue with one field, in the data contract's words. */
function problem(issue: z.core.$ZodIssue, o: Record<string, unknown>): string {
  const [field, item] = issue.path as [string, number | undefined];
  const value = o[field];
  if (value === undefined) return `missing field '${field}'`;
  if (field === 'embedding') {
    const why = item !== undefined ? ` (item ${item}: ${describe((value as unknown[])[item])})` : Array.isArray(value) ? '' : `, got ${describe(value)}`;
    return `field 'embedding' must be a non-empty array of finite numbers${why}`;
  }
  return `field '${field}' must be a string, got ${describe(value)}`;
}

/** The record on one line, or every field that is wrong with it. */
function checkRecord(kind: RecordKind, o: Record<string, unknown>): { value: InstanceRecord | FlashbackRecord } | { problem: string } {
  let schema: z.ZodType<InstanceRecord | FlashbackRecord> = instance;
  if (kind === 'flashback') {
    const hasPrompt = 'prompt' in o;
    const hasPair = 'instruction' in o || 'input' in o;
    if (hasPrompt && hasPair) return { problem: "give either 'instruction' and 'input', or 'prompt', not both" };
    if (!hasPrompt && !hasPair) return { problem: "missing field 'instruction' and 'input' (or 'prompt')" };
    schema = hasPrompt ? promptFlashback : pairFlashback;
  }
  const r = schema.safeParse(o);
  if (r.success) return { value: r.data };
  const firstPerField = r.error.issues.filter((issue, i, all) => all.findIndex((j) => j.path[0] === issue.path[0]) === i);
  return { problem: firstPerField.map((issue) => problem(issue, o)).join('; ') };
}

/**
 * Parses and validates JSONL text of instance records; `name` is what errors call the file. Blank lines are skipped.
 * @param text - the JSONL text.
 * @param name - the file's name in error messages.
 * @param kind - 'instance'.
 * @returns the records.
 * @throws DataError listing every bad line as "name:line: what" (invalid JSON, missing or mistyped fields, embeddings of different sizes), or an empty file.
 * @example
 * ```ts
 * parseJsonl('{"task":"t","instruction":"i","input":"x","output":"y"}\n', 'inline', 'instance');
 * ```
 */
export function parseJsonl(text: string, name: string, kind: 'instance'): InstanceRecord[];
/**
 * Parses and validates JSONL text of flashback records: `{task, instruction, input}` or `{task, prompt}`.
 * @param text - the JSONL text.
 * @param name - the file's name in error messages.
 * @param kind - 'flashback'.
 * @returns the records.
 * @throws DataError listing every bad line as "name:line: what".
 * @example
 * ```ts
 * parseJsonl('{"task":"logic","prompt":"Is it true?"}', 'inline', 'flashback');
 * ```
 */
export function parseJsonl(text: string, name: string, kind: 'flashback'): FlashbackRecord[];
export function parseJsonl(text: string, name: string, kind: RecordKind): (InstanceRecord | FlashbackRecord)[] {
  const lines = text.split('\n');
  if (lines.every((l) => l.trim() === '')) throw new DataError([`${name}: empty file`]);
  const problems: string[] = [];
  const records: (InstanceRecord | FlashbackRecord)[] = [];
  let dim: { size: number; line: number } | undefined;
  lines.forEach((raw, i) => {
    const line = raw.trim();
    if (line === '') return;
    const at = `${name}:${i + 1}`;
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch (e) {
      problems.push(`${at}: invalid JSON (${(e as Error).message})`);
      return;
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
      problems.push(`${at}: expected a JSON object, got ${describe(parsed)}`);
      return;
    }
    const checked = checkRecord(kind, parsed as Record<string, unknown>);
    if ('problem' in checked) {
      problems.push(`${at}: ${checked.problem}`);
      return;
    }
    // Retrieval indexes need one dimension for all embeddings in a file.
    const e = checked.value.embedding;
    if (e) {
      if (dim && e.length !== dim.size) {
        problems.push(`${at}: field 'embedding' has ${e.length} numbers, line ${dim.line} had ${dim.size}`);
        return;
      }
      dim ??= { size: e.length, line: i + 1 };
    }
    records.push(checked.value);
  });
  if (problems.length > 0) throw new DataError(problems);
  return records;
}

/**
 * Reads and validates a JSONL file of instance records; a bad file fails as a whole.
 * @param path - the file.
 * @param kind - 'instance'.
 * @returns the records.
 * @throws DataError naming the file, and the line of every bad record; or that the file is missing or empty.
 * @example
 * ```ts
 * const newTrain = readJsonl('new-train.jsonl', 'instance');
 * ```
 */
export function readJsonl(path: string, kind: 'instance'): InstanceRecord[];
/**
 * Reads and validates a JSONL file of flashback records; a bad file fails as a whole.
 * @param path - the file.
 * @param kind - 'flashback'.
 * @returns the records.
 * @throws DataError naming the file, and the line of every bad record.
 * @example
 * ```ts
 * const flashbacks = readJsonl('flashbacks.jsonl', 'flashback');
 * ```
 */
export function readJsonl(path: string, kind: 'flashback'): FlashbackRecord[];
export function readJsonl(path: string, kind: RecordKind): (InstanceRecord | FlashbackRecord)[] {
  let text: string;
  try {
    text = readText(path);
  } catch (e) {
    throw new DataError([(e as Error).message]);
  }
  return kind === 'instance' ? parseJsonl(text, path, kind) : parseJsonl(text, path, kind);
}

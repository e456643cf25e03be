// JSONL in the formats of DESIGN.md's "Data" contract. Reading checks every line and fails as a
// whole, naming file and line, so a bad dataset is never half-used.
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';

import { z } from 'zod';

import { DataError } from '../errors.js';
import { writeFileAtomic } from '../util/files.js';
import type { FlashbackRecord, InstanceRecord } from './records.js';

export { DataError };

/** Which record shape a JSONL file holds: new-task/eval instances, or flashback prompts. */
export type RecordKind = 'instance' | 'flashback';

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
const instance: z.ZodType<InstanceRecord> = z.object({ task: text, instruction: text, input: text, output: text, answer: text.optional(), format: text.optional(), embedding });
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
 * Checks records given in memory (from JavaScript, say) against the data contract, as readJsonl()
 * checks a file's lines: every problem at once, naming the array and the item.
 * @param where - what the records are called in messages, e.g. 'train: data.newTrain'.
 * @param records - the records.
 * @param kind - 'instance' or 'flashback'.
 * @returns the records, checked (fields a kind does not use dropped).
 * @throws DataError listing every problem, e.g. "train: data.newTrain[3]: field 'output' must be a string, got null".
 * @example
 * ```ts
 * const newTrain = checkRecords('my data', [{ task: 't', instruction: 'Echo.', input: 'a', output: 'a' }], 'instance');
 * ```
 */
export function checkRecords<K extends RecordKind>(where: string, records: unknown, kind: K): K extends 'flashback' ? FlashbackRecord[] : InstanceRecord[];
export function checkRecords(where: string, records: unknown, kind: RecordKind): (InstanceRecord | FlashbackRecord)[] {
  if (!Array.isArray(records)) throw new DataError([`${where}: expected an array of records, got ${describe(records)}`]);
  const checker = new LineChecker(where, kind, 'item');
  records.forEach((r, i) => checker.addValue(r, `${where}[${i}]`, i));
  if (checker.problems.length > 0) throw new DataError(checker.problems);
  return checker.records;
}

/**
 * A JSONL line's bytes as text (a leading UTF-8 byte-order mark dropped from the first), or the
 * problem with it; a file that is UTF-16 or binary is refused at once, as a whole.
 * @throws DataError for a UTF-16 byte-order mark (on the first line) or a NUL byte.
 */
export function lineText(bytes: Buffer, path: string, lineNo: number, first: boolean, utf8: { decode(bytes: Uint8Array): string }): string | { problem: string } {
  if (first) {
    if ((bytes[0] === 0xff && bytes[1] === 0xfe) || (bytes[0] === 0xfe && bytes[1] === 0xff))
      throw new DataError([`${path}: the file is UTF-16 (it starts with a UTF-16 byte-order mark); save it as UTF-8`]);
    if (bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf) bytes = bytes.subarray(3);
  }
  if (bytes.includes(0)) throw new DataError([`${path}:${lineNo}: binary data (a NUL byte): this is not a JSONL text file`]);
  try {
    return utf8.decode(bytes);
  } catch {
    return { problem: `${path}:${lineNo}: not valid UTF-8` };
  }
}

/** The longest line readJsonl() accepts by default: 16 MiB. */
export const MAX_LINE_BYTES = 16 * 1024 * 1024;

/**
 * Checks lines one by one and collects every problem, then gives the records or throws them all.
 * A streaming checker (readJsonlStream, train's streamed records) keeps neither the records nor the
 * flashback prompts seen (so no duplicate check): its memory stays bounded.
 */
export class LineChecker {
  readonly problems: string[] = [];
  readonly records: (InstanceRecord | FlashbackRecord)[] = [];
  private dim: { size: number; line: number } | undefined;
  private readonly prompts = new Map<string, number>();
  private nonBlank = 0;

  constructor(
    private readonly name: string,
    private readonly kind: RecordKind,
    /** what the numbers in messages count: a file's lines, or an array's items */
    private readonly unit: 'line' | 'item' | 'record' = 'line',
    private readonly streaming = false,
  ) {}

  /** A line's record, or undefined for a blank or bad line (its problem collected). */
  add(raw: string, lineNo: number): InstanceRecord | FlashbackRecord | undefined {
    const line = raw.trim();
    if (line === '') return undefined;
    this.nonBlank += 1;
    const at = `${this.name}:${lineNo}`;
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch (e) {
      this.problems.push(`${at}: invalid JSON (${(e as Error).message})`);
      return undefined;
    }
    return this.addValue(parsed, at, lineNo);
  }

  /** One parsed record (a line's, or an element of an array given in memory), `at` naming it; undefined when it is bad. */
  addValue(parsed: unknown, at: string, lineNo: number): InstanceRecord | FlashbackRecord | undefined {
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
      this.problems.push(`${at}: expected a JSON object, got ${describe(parsed)}`);
      return undefined;
    }
    const checked = checkRecord(this.kind, parsed as Record<string, unknown>);
    if ('problem' in checked) {
      this.problems.push(`${at}: ${checked.problem}`);
      return undefined;
    }
    // Retrieval indexes need one dimension for all embeddings in a file.
    const e = checked.value.embedding;
    if (e) {
      if (this.dim && e.length !== this.dim.size) {
        this.problems.push(`${at}: field 'embedding' has ${e.length} numbers, ${this.unit} ${this.dim.line} had ${this.dim.size}`);
        return undefined;
      }
      this.dim ??= { size: e.length, line: lineNo };
    }
    if (this.streaming) return checked.value;
    // A flashback given twice would weigh twice in the divergence: almost always a concatenation mistake.
    if (this.kind === 'flashback') {
      const r = checked.value as unknown as Record<string, string>;
      const key = 'prompt' in r ? `prompt\0${r.prompt}` : `pair\0${r.instruction}\0${r.input}`;
      const first = this.prompts.get(key);
      if (first !== undefined) {
        this.problems.push(`${at}: duplicate flashback (the same prompt as ${this.unit} ${first})`);
        return undefined;
      }
      this.prompts.set(key, lineNo);
    }
    this.records.push(checked.value);
    return checked.value;
  }

  finish(): (InstanceRecord | FlashbackRecord)[] {
    if (this.nonBlank === 0 && this.problems.length === 0) throw new DataError([`${this.name}: empty file`]);
    if (this.problems.length > 0) throw new DataError(this.problems);
    return this.records;
  }
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
 * @throws DataError listing every bad line as "name:line: what", including a flashback given twice (the line of its first copy).
 * @example
 * ```ts
 * parseJsonl('{"task":"logic","prompt":"Is it true?"}', 'inline', 'flashback');
 * ```
 */
export function parseJsonl(text: string, name: string, kind: 'flashback'): FlashbackRecord[];
export function parseJsonl(text: string, name: string, kind: RecordKind): (InstanceRecord | FlashbackRecord)[] {
  const checker = new LineChecker(name, kind);
  text.split('\n').forEach((line, i) => checker.add(line, i + 1));
  return checker.finish();
}

/** Options of {@link readJsonl}. */
export interface ReadJsonlOptions {
  /** refuse a line longer than this many bytes (default MAX_LINE_BYTES, 16 MiB) */
  maxLineBytes?: number;
}

/**
 * Reads and validates a JSONL file of instance records in UTF-8 (a UTF-8 byte-order mark is
 * skipped), streaming it in chunks: a line over `maxLineBytes` is refused as soon as it is seen, so
 * a huge or endless line cannot exhaust memory.
 * @param path - the file.
 * @param kind - 'instance'.
 * @param options - maxLineBytes (default {@link MAX_LINE_BYTES}, 16 MiB).
 * @returns the records.
 * @throws DataError naming the file and line: unreadable files, UTF-16, binary data (NUL bytes), invalid UTF-8, over-long lines, and every bad record (all of them in one error).
 * @example
 * ```ts
 * const records = readJsonl('data/new-train.jsonl', 'instance');
 * ```
 */
export function readJsonl(path: string, kind: 'instance', options?: ReadJsonlOptions): InstanceRecord[];
/**
 * Reads and validates a JSONL file of flashback records, as the instance form does.
 * @param path - the file.
 * @param kind - 'flashback'.
 * @param options - maxLineBytes (default {@link MAX_LINE_BYTES}, 16 MiB).
 * @returns the records.
 * @throws DataError naming the file and line, as for instances, and for a flashback given twice.
 * @example
 * ```ts
 * const flashbacks = readJsonl('data/flashbacks.jsonl', 'flashback');
 * ```
 */
export function readJsonl(path: string, kind: 'flashback', options?: ReadJsonlOptions): FlashbackRecord[];
export function readJsonl(path: string, kind: RecordKind, options: ReadJsonlOptions = {}): (InstanceRecord | FlashbackRecord)[] {
  const limit = options.maxLineBytes ?? MAX_LINE_BYTES;
  const checker = new LineChecker(path, kind);
  const utf8 = new TextDecoder('utf-8', { fatal: true });
  let fd: number;
  try {
    fd = openSync(path, 'r');
    if (!fstatSync(fd).isFile()) {
      closeSync(fd);
      throw Object.assign(new Error('not a file'), { code: 'EISDIR' });
    }
  } catch (e) {
    throw new DataError([`${path}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`]);
  }
  try {
    const chunk = Buffer.alloc(1 << 20);
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    let lineNo = 1;
    let first = true;
    const line = (bytes: Buffer) => {
      const text = lineText(bytes, path, lineNo, first, utf8);
      first = false;
      if (typeof text === 'string') checker.add(text, lineNo);
      else checker.problems.push(text.problem);
      lineNo += 1;
    };
    for (;;) {
      let n: number;
      try {
        n = readSync(fd, chunk, 0, chunk.length, null);
      } catch (e) {
        throw new DataError([`${path}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`]);
      }
      if (n === 0) break;
      let from = 0;
      for (let nl = chunk.indexOf(10, from); nl !== -1 && nl < n; nl = chunk.indexOf(10, from)) {
        const part = chunk.subarray(from, nl);
        if (pendingBytes + part.length > limit) tooLong(path, lineNo, limit);
        line(pending.length ? Buffer.concat([...pending, part]) : Buffer.from(part));
        pending = [];
        pendingBytes = 0;
        from = nl + 1;
      }
      if (from < n) {
        pendingBytes += n - from;
        if (pendingBytes > limit) tooLong(path, lineNo, limit);
        pending.push(Buffer.from(chunk.subarray(from, n)));
      }
    }
    if (pendingBytes > 0 || first) line(Buffer.concat(pending));
  } finally {
    closeSync(fd);
  }
  return checker.finish();
}

export function tooLong(path: string, lineNo: number, limit: number): never {
  throw new DataError([`${path}:${lineNo}: the line is longer than ${(limit / 1024 / 1024).toFixed(limit % (1024 * 1024) ? 2 : 0)} MiB, the limit (is this a JSONL file? raise maxLineBytes if the line is meant)`]);
}

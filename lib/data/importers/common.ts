// What every importer shares: reading a file as JSON or JSONL with a line number per item, the
// skip report, and the error for a file that is unreadable or not in the format asked for.
import { readText } from '../../util/files.js';
import { DataError } from '../jsonl.js';
import type { InstanceRecord } from '../records.js';

/** One input item an importer left out, and why. */
export interface Skip {
  /** The input file the item is in, as its path was given. */
  file: string;
  /** 1-based line where the item starts (JSONL: its line; JSON: the line of its opening brace). */
  line: number;
  /** Why the item was left out (e.g. "missing field 'question'"). */
  reason: string;
}

/**
 * "file:line: reason; skipped", as the importers report a skip.
 * @param s - the skip.
 * @returns the one-line report.
 * @example
 * ```ts
 * formatSkip({ file: 'gsm8k.jsonl', line: 7, reason: "missing field 'question'" });
 * // "gsm8k.jsonl:7: missing field 'question'; skipped"
 * ```
 */
export function formatSkip(s: Skip): string {
  return `${s.file}:${s.line}: ${s.reason}; skipped`;
}

/** What one input file gave. */
export interface FileCount {
  /** The input file, as its path was given. */
  file: string;
  /** Records imported from it (after any per-task cap). */
  records: number;
  /** Items of it that were skipped. */
  skipped: number;
}

/** The result of importing files of one format. */
export interface ImportResult {
  /** The imported records, file by file in the order the files were given. */
  records: InstanceRecord[];
  /** Every item left out, with its file, line and reason. */
  skipped: Skip[];
  /** One count per input file, in the order they were given. */
  files: FileCount[];
  /** What was changed without skipping (e.g. a task capped to a sample of its instances). */
  notes: string[];
}

/** One item of an input file: a parsed JSON value and the line it starts on. */
export interface Item {
  value: unknown;
  line: number;
}

/** The parsed contents of one input file. */
export type Contents =
  | { kind: 'json'; value: unknown; text: string }
  | { kind: 'jsonl'; items: Item[]; bad: Skip[] };

/** Reads a file (without a UTF-8 byte-order mark); a missing or unreadable file is a {@link DataError} naming it. */
export function readInput(path: string): string {
  try {
    return readText(path).replace(/^\uFEFF/, '');
  } catch (e) {
    throw new DataError([(e as Error).message]);
  }
}

/**
 * A file's text as one JSON document when it parses as one (a JSON array or object, which may span
 * lines), otherwise as JSONL: one item per non-blank line, lines that are not JSON reported as skips.
 */
export function parseInput(text: string, file: string): Contents {
  if (text.trim() === '') throw new DataError([`${file}: empty file`]);
  try {
    return { kind: 'json', value: JSON.parse(text) as unknown, text };
  } catch {
    // not one JSON document: JSONL
  }
  const items: Item[] = [];
  const bad: Skip[] = [];
  text.split('\n').forEach((raw, i) => {
    if (raw.trim() === '') return;
    try {
      items.push({ value: JSON.parse(raw) as unknown, line: i + 1 });
    } catch (e) {
      bad.push({ file, line: i + 1, reason: `invalid JSON (${(e as Error).message})` });
    }
  });
  return { kind: 'jsonl', items, bad };
}

/**
 * The 1-based line on which each element of an array in a valid JSON text starts. `path` names the
 * array: [] for a top-level array, ['Instances'] for the `Instances` array of a top-level object.
 * @param text - a valid JSON text (it is scanned, not parsed or checked).
 * @param path - the keys leading from the top-level value to the array, [] for a top-level array.
 * @returns one line number per element, in order; empty when the array is empty or not there.
 * @example
 * ```ts
 * elementLines('[\n  {"a": 1},\n  {"a": 2}\n]', []); // [2, 3]
 * elementLines('{"Instances": [\n{"id": "x"}]}', ['Instances']); // [2]
 * ```
 */
export function elementLines(text: string, path: readonly string[]): number[] {
  interface Frame { array: boolean; key?: string; expectKey: boolean; awaiting: boolean }
  const stack: Frame[] = [];
  const lines: number[] = [];
  const atTarget = () =>
    stack.length === path.length + 1 && stack[path.length]!.array && path.every((k, i) => !stack[i]!.array && stack[i]!.key === k);
  let line = 1;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (c === '\n') { line++; continue; }
    if (c === ' ' || c === '\t' || c === '\r') continue;
    const top = stack[stack.length - 1];
    if (top?.array && top.awaiting && c !== ']') {
      top.awaiting = false;
      if (atTarget()) lines.push(line);
    }
    if (c === '"') {
      let j = i + 1;
      while (j < text.length && text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      if (top && !top.array && top.expectKey) {
        top.key = JSON.parse(text.slice(i, j + 1)) as string;
        top.expectKey = false;
      }
      i = j;
    } else if (c === '{') stack.push({ array: false, expectKey: true, awaiting: false });
    else if (c === '[') stack.push({ array: true, expectKey: false, awaiting: true });
    else if (c === '}' || c === ']') stack.pop();
    else if (c === ',' && top) {
      if (top.array) top.awaiting = true;
      else top.expectKey = true;
    }
  }
  return lines;
}

/** The items of a row-per-record file: JSONL lines, the elements of a JSON array, or one JSON object. */
export function rows(contents: Contents): { items: Item[]; bad: Skip[] } {
  if (contents.kind === 'jsonl') return contents;
  const { value, text } = contents;
  if (Array.isArray(value)) {
    const lines = elementLines(text, []);
    return { items: value.map((v, i) => ({ value: v, line: lines[i] ?? 1 })), bad: [] };
  }
  return { items: [{ value, line: 1 }], bad: [] };
}

const describe = (v: unknown): string => (v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v);

/** A field's value as a non-empty trimmed string (numbers are written out), or why it is not one. */
export function textField(o: Record<string, unknown>, field: string): string | { problem: string } {
  const v = o[field];
  if (v === undefined) return { problem: `missing field '${field}'` };
  if (typeof v === 'number' && Number.isFinite(v)) return String(v);
  if (typeof v !== 'string') return { problem: `field '${field}' must be a string, got ${describe(v)}` };
  if (v.trim() === '') return { problem: `field '${field}' is empty` };
  return v.trim();
}

export const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

export const notAnObject = (v: unknown): string => `expected a JSON object, got ${describe(v)}`;

/**
 * Converts every item of every file with `convert` (a record, or the reason it is skipped) and
 * checks each file gave something: a file of which no item converts is not in this format, an
 * error naming it and its first problem.
 */
export function importRows(
  format: string,
  paths: readonly string[],
  convert: (o: Record<string, unknown>, file: string) => InstanceRecord | { problem: string },
  itemsOf: (contents: Contents, file: string) => { items: Item[]; bad: Skip[] } = rows,
): ImportResult {
  const result: ImportResult = { records: [], skipped: [], files: [], notes: [] };
  for (const file of paths) {
    const { items, bad } = itemsOf(parseInput(readInput(file), file), file);
    const skipped: Skip[] = [...bad];
    let records = 0;
    for (const { value, line } of items) {
      const r = isObject(value) ? convert(value, file) : { problem: notAnObject(value) };
      if ('problem' in r) skipped.push({ file, line, reason: r.problem });
      else {
        result.records.push(r);
        records++;
      }
    }
    if (records === 0) {
      const first = skipped.sort((a, b) => a.line - b.line)[0];
      throw new DataError([`${file}: no ${format} records in it${first ? ` (${skipped.length} item${skipped.length > 1 ? 's' : ''} rejected, the first: line ${first.line}: ${first.reason})` : ''}; is it ${format} data?`]);
    }
    skipped.sort((a, b) => a.line - b.line);
    result.skipped.push(...skipped);
    result.files.push({ file, records, skipped: skipped.length });
  }
  return result;
}

/**
 * "3 files: 120 records, 4 skipped", the summary line of an import.
 * @param r - an import's result (its records, skips and files).
 * @returns the summary line.
 * @example
 * ```ts
 * const result = importFiles('gsm8k', ['gsm8k-test.jsonl']);
 * console.log(importSummary(result)); // "1 file: 1319 records, 0 skipped"
 * ```
 */
export function summary(r: Pick<ImportResult, 'records' | 'skipped' | 'files'>): string {
  return `${r.files.length} file${r.files.length === 1 ? '' : 's'}: ${r.records.length} record${r.records.length === 1 ? '' : 's'}, ${r.skipped.length} skipped`;
}

// JSONL in the formats of DESIGN.md's "Data" contract. Reading checks every line and fails as a
// whole, naming file and line, so a bad dataset is never half-used.
import { readFileSync } from 'node:fs';

import { writeFileAtomic } from '../util/files.js';
import type { FlashbackRecord, InstanceRecord } from './records.js';

export type RecordKind = 'instance' | 'flashback';

/** Every problem found in a file, one "file:line: what" per entry. */
export class DataError extends Error {
  constructor(readonly problems: string[]) {
    const shown = problems.slice(0, 20);
    super(problems.length > shown.length ? `${shown.join('\n')}\n... and ${problems.length - shown.length} more` : shown.join('\n'));
    this.name = 'DataError';
  }
}

/** Writes one JSON object per line to a temporary file, fsyncs, then renames it into place. */
export function writeJsonl(path: string, records: readonly (InstanceRecord | FlashbackRecord)[]): void {
  writeFileAtomic(path, records.map((r) => `${JSON.stringify(r)}\n`).join(''));
}

const describe = (v: unknown): string => (v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v);

type Checked<T> = { value: T } | { problem: string };

function checkFields(o: Record<string, unknown>, required: readonly string[]): string | undefined {
  for (const f of required) {
    if (!(f in o)) return `missing field '${f}'`;
    if (typeof o[f] !== 'string') return `field '${f}' must be a string, got ${describe(o[f])}`;
  }
  for (const f of ['answer', 'prompt', 'instruction', 'input', 'output'] as const) {
    if (f in o && typeof o[f] !== 'string') return `field '${f}' must be a string, got ${describe(o[f])}`;
  }
  if ('embedding' in o) {
    const e = o.embedding;
    if (!Array.isArray(e) || e.length === 0 || !e.every((x) => typeof x === 'number' && Number.isFinite(x))) {
      return "field 'embedding' must be a non-empty array of finite numbers";
    }
  }
  return undefined;
}

function checkInstance(o: Record<string, unknown>): Checked<InstanceRecord> {
  const problem = checkFields(o, ['task', 'instruction', 'input', 'output']);
  if (problem) return { problem };
  const r: InstanceRecord = { task: o.task as string, instruction: o.instruction as string, input: o.input as string, output: o.output as string };
  if (typeof o.answer === 'string') r.answer = o.answer;
  if (Array.isArray(o.embedding)) r.embedding = o.embedding as number[];
  return { value: r };
}

function checkFlashback(o: Record<string, unknown>): Checked<FlashbackRecord> {
  const hasPrompt = 'prompt' in o;
  const hasPair = 'instruction' in o || 'input' in o;
  if (hasPrompt && hasPair) return { problem: "give either 'instruction' and 'input', or 'prompt', not both" };
  if (!hasPrompt && !hasPair) return { problem: "missing field 'instruction' and 'input' (or 'prompt')" };
  const problem = checkFields(o, hasPrompt ? ['task', 'prompt'] : ['task', 'instruction', 'input']);
  if (problem) return { problem };
  const r: FlashbackRecord = hasPrompt
    ? { task: o.task as string, prompt: o.prompt as string }
    : { task: o.task as string, instruction: o.instruction as string, input: o.input as string };
  if (Array.isArray(o.embedding)) r.embedding = o.embedding as number[];
  return { value: r };
}

/** Parses and validates JSONL text; `name` is what errors call the file. Blank lines are skipped. */
export function parseJsonl(text: string, name: string, kind: 'instance'): InstanceRecord[];
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
    const checked = kind === 'instance' ? checkInstance(parsed as Record<string, unknown>) : checkFlashback(parsed as Record<string, unknown>);
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

export function readJsonl(path: string, kind: 'instance'): InstanceRecord[];
export function readJsonl(path: string, kind: 'flashback'): FlashbackRecord[];
export function readJsonl(path: string, kind: RecordKind): (InstanceRecord | FlashbackRecord)[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new DataError([`${path}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`]);
  }
  return kind === 'instance' ? parseJsonl(text, path, kind) : parseJsonl(text, path, kind);
}

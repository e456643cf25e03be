// JSONL read as a stream: a file of millions of records is read a chunk at a time and handed out
// record by record, each line checked as readJsonl() checks it, so memory holds one chunk and the
// records the reader keeps, never the file. The first bad line ends the iteration (readJsonl reports
// them all: it has the whole file; a stream has only read so far).
import { createReadStream, statSync } from 'node:fs';

import { DataError, LineChecker, lineText, MAX_LINE_BYTES, type ReadJsonlOptions, type RecordKind, tooLong } from './jsonl.js';
import type { FlashbackRecord, InstanceRecord } from './records.js';

/**
 * The records of a JSONL file of instances, read as they are needed: an `AsyncIterable` that
 * reads the file in 1 MiB chunks and checks each line as {@link readJsonl} does (UTF-8, one JSON
 * object per line, the data contract's fields, one embedding size). Each `for await` (each
 * `[Symbol.asyncIterator]()` call) reads the file again from its start, so train() can take it as
 * `data.newTrain` for several epochs and for resuming. A flashback stream has no duplicate check
 * (that would keep every prompt seen).
 * @param path - the file.
 * @param kind - 'instance'.
 * @param options - maxLineBytes (default {@link MAX_LINE_BYTES}, 16 MiB).
 * @returns the records, in file order.
 * @throws DataError at once for a file that cannot be opened; the iteration rejects with a DataError naming file:line at the first bad line, or for a file with no records.
 * @example
 * ```ts
 * const newTrain = readJsonlStream('data/new-train.jsonl', 'instance');
 * let n = 0;
 * for await (const record of newTrain) if (record.task === 'sum') n += 1;
 * ```
 */
export function readJsonlStream(path: string, kind: 'instance', options?: ReadJsonlOptions): AsyncIterable<InstanceRecord>;
/**
 * The records of a JSONL file of flashbacks, read as they are needed, as the instance form does.
 * @param path - the file.
 * @param kind - 'flashback'.
 * @param options - maxLineBytes (default {@link MAX_LINE_BYTES}, 16 MiB).
 * @returns the records, in file order.
 * @throws DataError as the instance form does.
 * @example
 * ```ts
 * for await (const f of readJsonlStream('data/flashbacks.jsonl', 'flashback')) console.log(f.task);
 * ```
 */
export function readJsonlStream(path: string, kind: 'flashback', options?: ReadJsonlOptions): AsyncIterable<FlashbackRecord>;
export function readJsonlStream(path: string, kind: RecordKind, options: ReadJsonlOptions = {}): AsyncIterable<InstanceRecord | FlashbackRecord> {
  const limit = options.maxLineBytes ?? MAX_LINE_BYTES;
  // A missing file is refused where the stream is made, not at the first step of a run.
  try {
    if (!statSync(path).isFile()) throw Object.assign(new Error('not a file'), { code: 'EISDIR' });
  } catch (e) {
    throw new DataError([`${path}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`]);
  }
  return { [Symbol.asyncIterator]: () => records(path, kind, limit) };
}

async function* records(path: string, kind: RecordKind, limit: number): AsyncGenerator<InstanceRecord | FlashbackRecord> {
  const checker = new LineChecker(path, kind, 'line', true);
  const utf8 = new TextDecoder('utf-8', { fatal: true });
  let lineNo = 1;
  let first = true;
  let count = 0;
  const line = (bytes: Buffer): InstanceRecord | FlashbackRecord | undefined => {
    const text = lineText(bytes, path, lineNo, first, utf8);
    first = false;
    if (typeof text !== 'string') throw new DataError([text.problem]);
    const r = checker.add(text, lineNo);
    if (checker.problems.length > 0) throw new DataError(checker.problems);
    lineNo += 1;
    if (r) count += 1;
    return r;
  };
  const input = createReadStream(path, { highWaterMark: 1 << 20 });
  try {
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    for await (const chunk of input as AsyncIterable<Buffer>) {
      let from = 0;
      for (let nl = chunk.indexOf(10, from); nl !== -1; nl = chunk.indexOf(10, from)) {
        const part = chunk.subarray(from, nl);
        if (pendingBytes + part.length > limit) tooLong(path, lineNo, limit);
        const r = line(pending.length ? Buffer.concat([...pending, part]) : part);
        pending = [];
        pendingBytes = 0;
        from = nl + 1;
        if (r) yield r;
      }
      if (from < chunk.length) {
        pendingBytes += chunk.length - from;
        if (pendingBytes > limit) tooLong(path, lineNo, limit);
        pending.push(chunk.subarray(from));
      }
    }
    if (pendingBytes > 0 || first) {
      const r = line(Buffer.concat(pending));
      if (r) yield r;
    }
  } catch (e) {
    if (e instanceof DataError) throw e;
    throw new DataError([`${path}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`]);
  } finally {
    input.destroy();
  }
  if (count === 0) throw new DataError([`${path}: empty file`]);
}

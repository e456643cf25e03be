// A streamed run's new-task records: data.newTrain as an AsyncIterable, read a window at a time
// (streamWindow records), each window shuffled by the seed, the epoch and its index, and handed out
// a step's worth at a time. Only the current window is held. An epoch ends where the source ends (its
// last step short, as an array run's); the next epoch iterates the source again. The position (epoch,
// records of it handed out) goes into each checkpoint: a resumed run iterates the source again, skips
// to the start of that window, shuffles it as before and drops what was handed out, so it goes on
// with the same records in the same order.
import { DataError, LineChecker } from '../data/jsonl.js';
import { createRng, hashString } from '../data/rng.js';
import { type InstanceRecord } from '../data/records.js';
import { CheckpointError } from '../errors.js';

/** Where a streamed run is: the epoch (0-based) and how many of its records the finished steps took. */
export interface StreamPosition {
  epoch: number;
  offset: number;
}

/** Whether train()'s data.newTrain is a stream (an AsyncIterable) rather than an array. */
export function isStream(v: unknown): v is AsyncIterable<unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v) && typeof (v as Record<symbol, unknown>)[Symbol.asyncIterator] === 'function';
}

/** The order of window `w` of `epoch`: window 0's is an array run's whole-epoch order, so a window holding every record shuffles as an array run does. */
function windowSeed(seed: number, epoch: number, w: number): number {
  return hashString(w === 0 ? `${seed}:order:${epoch}` : `${seed}:order:${epoch}:${w}`);
}

/** The position a checkpoint saved, checked. */
export function checkPosition(position: unknown, dir: string): StreamPosition {
  const p = position as Partial<StreamPosition> | undefined;
  const ok = (n: unknown) => Number.isSafeInteger(n) && (n as number) >= 0;
  if (!p || typeof p !== 'object' || !ok(p.epoch) || !ok(p.offset))
    throw new CheckpointError(`train: ${dir} has no valid position in the streamed data (${JSON.stringify(position)})`);
  return { epoch: p.epoch!, offset: p.offset! };
}

/** A streamed source's records in windows; see the file's comment. */
export class StreamedRecords {
  private iterator: AsyncIterator<unknown> | undefined;
  private epoch = 0;
  /** records of this epoch handed out */
  private offset = 0;
  /** the current window, shuffled, and its index in the epoch */
  private window: InstanceRecord[] = [];
  private windowIndex = -1;
  /** the source has ended in this epoch */
  private ended = false;
  private readonly checker = new LineChecker('train: data.newTrain', 'instance', 'record', true);

  constructor(
    private readonly source: AsyncIterable<unknown>,
    private readonly seed: number,
    private readonly size: number,
    /** a resumed run's position; the source is read up to it at the first take() */
    private resumeAt?: StreamPosition,
  ) {}

  /** The position after the records handed out so far (what a checkpoint saves). */
  get position(): StreamPosition {
    return { epoch: this.epoch, offset: this.offset };
  }

  /**
   * The next `n` records of this epoch, fewer where the epoch ends; an epoch already ended starts
   * the next (the source iterated again).
   * @throws DataError for a bad record (naming its place in the source) or a source with no records.
   */
  async take(n: number): Promise<InstanceRecord[]> {
    if (!this.iterator) await this.start();
    const out: InstanceRecord[] = [];
    while (out.length < n) {
      const i = this.offset - this.windowIndex * this.size;
      if (i < this.window.length) {
        out.push(this.window[i]!);
        this.offset += 1;
        continue;
      }
      if (await this.nextWindow()) continue;
      if (out.length > 0) break;
      if (this.offset === 0) throw new DataError([`train: data.newTrain yielded no records${this.epoch > 0 ? ` when iterated again for epoch ${this.epoch + 1}` : ''}`]);
      await this.startEpoch(this.epoch + 1);
    }
    return out;
  }

  /** Ends the source's current iteration (a file's stream is closed). */
  async close(): Promise<void> {
    const it = this.iterator;
    this.iterator = undefined;
    this.window = [];
    await it?.return?.();
  }

  private async start(): Promise<void> {
    const at = this.resumeAt ?? { epoch: 0, offset: 0 };
    this.resumeAt = undefined;
    await this.startEpoch(at.epoch);
    if (at.offset === 0) return;
    // Skip to the start of the window the run stopped in, then read that window as before.
    const w = Math.floor(at.offset / this.size);
    for (let skipped = 0; skipped < w * this.size; skipped++) {
      if ((await this.iterator!.next()).done)
        throw new DataError([`train: data.newTrain ended after ${skipped} records, before the checkpoint's position (record ${at.offset} of epoch ${at.epoch + 1}): resume with the same data`]);
    }
    this.windowIndex = w - 1;
    await this.nextWindow();
    if (at.offset > w * this.size + this.window.length)
      throw new DataError([`train: data.newTrain ended before the checkpoint's position (record ${at.offset} of epoch ${at.epoch + 1}): resume with the same data`]);
    this.offset = at.offset;
  }

  private async startEpoch(epoch: number): Promise<void> {
    await this.close();
    this.iterator = this.source[Symbol.asyncIterator]();
    Object.assign(this, { epoch, offset: 0, window: [], windowIndex: -1, ended: false });
  }

  /** Reads and shuffles the next window; false when the source has ended. */
  private async nextWindow(): Promise<boolean> {
    if (this.ended) return false;
    const w = this.windowIndex + 1;
    const records: InstanceRecord[] = [];
    this.window = []; // the window read is all that is held
    while (records.length < this.size) {
      const r = await this.iterator!.next();
      if (r.done) {
        this.ended = true;
        break;
      }
      const at = w * this.size + records.length;
      const record = this.checker.addValue(r.value, `train: data.newTrain record ${at}`, at) as InstanceRecord | undefined;
      if (!record) throw new DataError(this.checker.problems);
      records.push(record);
    }
    if (records.length === 0) return false;
    this.window = createRng(windowSeed(this.seed, this.epoch, w)).shuffle(records);
    this.windowIndex = w;
    return true;
  }
}

/**
 * The first `n` records of a source (checked), for what a finished streamed run keeps of its
 * prompts: a later round's flashbacks come from them.
 */
export async function firstRecords(source: AsyncIterable<unknown>, n: number): Promise<InstanceRecord[]> {
  const reader = new StreamedRecords(source, 0, n);
  try {
    return await reader.take(n);
  } finally {
    await reader.close();
  }
}

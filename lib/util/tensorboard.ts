// TensorBoard event files, scalars only. No maintained npm writer exists (@tensorflow/tfjs-node has
// one but downloads libtensorflow at install), and the format is small: a file of TFRecords
// (length, masked CRC32C of the length, payload, masked CRC32C of the payload) whose payloads are
// tensorflow.Event protobufs: the first says "brain.Event:2", each later one holds a Summary of
// {tag, simple_value}. Written from the format's description; see test/26 for a reader.
import { closeSync, fsyncSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';

const CRC32C_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32C (Castagnoli), as TFRecord uses it. */
export function crc32c(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC32C_TABLE[(c ^ b) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** TFRecord's masked CRC: rotate right by 15 bits, add 0xa282ead8 (mod 2^32). */
export function maskedCrc32c(bytes: Uint8Array): number {
  const c = crc32c(bytes);
  return ((((c >>> 15) | (c << 17)) >>> 0) + 0xa282ead8) >>> 0;
}

/** One TFRecord: u64 length, u32 masked CRC of those 8 bytes, the payload, u32 masked CRC of it (little-endian). */
export function tfRecord(payload: Uint8Array): Buffer {
  const out = Buffer.alloc(12 + payload.length + 4);
  out.writeBigUInt64LE(BigInt(payload.length), 0);
  out.writeUInt32LE(maskedCrc32c(out.subarray(0, 8)), 8);
  out.set(payload, 12);
  out.writeUInt32LE(maskedCrc32c(payload), 12 + payload.length);
  return out;
}

// Protobuf wire format: keys are (field << 3) | wire type; 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32.
function varint(value: bigint): number[] {
  const out: number[] = [];
  let v = BigInt.asUintN(64, value);
  while (v >= 0x80n) {
    out.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  out.push(Number(v));
  return out;
}

function lengthDelimited(field: number, bytes: Uint8Array): Buffer {
  return Buffer.concat([Buffer.from([...varint(BigInt((field << 3) | 2)), ...varint(BigInt(bytes.length))]), bytes]);
}

function eventHeader(wallTime: number, step: number): Buffer {
  const b = Buffer.alloc(9);
  b[0] = (1 << 3) | 1; // wall_time: double
  b.writeDoubleLE(wallTime, 1);
  return Buffer.concat([b, Buffer.from([(2 << 3) | 0, ...varint(BigInt(step))])]); // step: int64
}

/** An Event protobuf holding file_version (field 3). */
export function fileVersionEvent(wallTime: number): Buffer {
  return Buffer.concat([eventHeader(wallTime, 0), lengthDelimited(3, Buffer.from('brain.Event:2'))]);
}

/** An Event protobuf whose summary (field 5) holds one Value {tag (1), simple_value (2)} per scalar. */
export function scalarsEvent(wallTime: number, step: number, scalars: ReadonlyArray<readonly [string, number]>): Buffer {
  const values = scalars.map(([tag, v]) => {
    const f = Buffer.alloc(5);
    f[0] = (2 << 3) | 5;
    f.writeFloatLE(v, 1);
    return lengthDelimited(1, Buffer.concat([lengthDelimited(1, Buffer.from(tag, 'utf8')), f]));
  });
  return Buffer.concat([eventHeader(wallTime, step), lengthDelimited(5, Buffer.concat(values))]);
}

/**
 * Writes scalars to a TensorBoard event file in `dir` (created if needed), named
 * events.out.tfevents.<seconds>.<host>.<pid>.<n> as TensorBoard expects. Every call appends whole
 * records and flushes, so TensorBoard can read the file while training runs.
 * @example
 * const tb = new TensorBoardWriter('runs/tb');
 * tb.scalars(1, { 'train/loss': 2.3, 'train/lr': 1e-3 });
 * tb.close();
 */
export class TensorBoardWriter {
  private static count = 0;
  /** the event file's path */
  readonly file: string;
  private fd: number | undefined;

  /**
   * Opens a new event file in `dir` (created if needed).
   * @param dir - the log folder (`tensorboard --logdir` it).
   * @throws Error (from the file system) when `dir` cannot be created or written.
   * @example
   * ```ts
   * const tb = new TensorBoardWriter('runs/tb');
   * ```
   */
  constructor(dir: string) {
    mkdirSync(dir, { recursive: true });
    const now = Date.now() / 1000;
    this.file = join(dir, `events.out.tfevents.${Math.floor(now)}.${hostname()}.${process.pid}.${TensorBoardWriter.count++}`);
    this.fd = openSync(this.file, 'wx');
    this.write(fileVersionEvent(now));
  }

  /**
   * Appends one event with these scalars at `step`. Non-finite values are written as they are
   * (TensorBoard shows NaN/inf); tags must be non-empty.
   * @param step - the global step (a non-negative integer).
   * @param values - scalars by tag, e.g. `{'train/loss': 2.3}`.
   * @param wallTime - seconds since the epoch (default now).
   * @throws TypeError on a bad step or tag; Error once closed.
   * @example
   * ```ts
   * const tb = new TensorBoardWriter('runs/tb');
   * tb.scalars(10, { 'train/loss': 1.9, 'train/lr': 5e-4 });
   * ```
   */
  scalars(step: number, values: Record<string, number>, wallTime: number = Date.now() / 1000): void {
    if (!Number.isSafeInteger(step) || step < 0) throw new TypeError(`TensorBoardWriter.scalars: step must be a non-negative integer, got ${step}`);
    const entries = Object.entries(values);
    for (const [tag, v] of entries) {
      if (!tag) throw new TypeError('TensorBoardWriter.scalars: a tag is empty');
      if (typeof v !== 'number') throw new TypeError(`TensorBoardWriter.scalars: ${tag} must be a number, got ${typeof v}`);
    }
    if (entries.length) this.write(scalarsEvent(wallTime, step, entries));
  }

  private write(event: Buffer): void {
    if (this.fd === undefined) throw new Error(`TensorBoardWriter: ${this.file} is closed`);
    writeSync(this.fd, tfRecord(event));
  }

  /**
   * Flushes to disk and closes the file; later calls do nothing.
   * @example
   * ```ts
   * const tb = new TensorBoardWriter('runs/tb');
   * tb.close();
   * ```
   */
  close(): void {
    if (this.fd === undefined) return;
    fsyncSync(this.fd);
    closeSync(this.fd);
    this.fd = undefined;
  }
}

// GGUF version 3, the file format of llama.cpp (and of Ollama and node-llama-cpp, which run it),
// written from its published description: a little-endian header ("GGUF", version, tensor and
// key-value counts), typed metadata key-values, one info record per tensor (name, dimensions
// innermost first, element type, offset into the data section), then the tensor data, every tensor
// starting at a multiple of general.alignment. The file is written to a temporary name, fsynced and
// renamed, and the tensors are encoded one at a time, so a model never sits in memory twice.
import { closeSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { endianness } from 'node:os';

/** The tensor element types this writer can encode: ggml's F32, F16 and Q8_0. */
export const GGUF_TENSOR_TYPES = ['f32', 'f16', 'q8_0'] as const;
/** One of {@link GGUF_TENSOR_TYPES}. */
export type GgufTensorType = (typeof GGUF_TENSOR_TYPES)[number];

/** ggml's type ids. */
const GGML_TYPE: Record<GgufTensorType, number> = { f32: 0, f16: 1, q8_0: 8 };
/** Q8_0: blocks of 32 values, each an fp16 scale and 32 int8s. */
export const Q8_0_BLOCK = 32;
const Q8_0_BYTES = 2 + Q8_0_BLOCK;

/** The data section's alignment in bytes (GGUF's default, written as general.alignment). */
export const GGUF_ALIGNMENT = 32;

/** The metadata value types this writer writes, and the values each holds. */
export interface GgufValueTypes {
  /** UINT32 */
  u32: number;
  /** INT32 */
  i32: number;
  /** FLOAT32 */
  f32: number;
  /** BOOL */
  bool: boolean;
  /** STRING (UTF-8) */
  string: string;
  /** ARRAY of STRING */
  'string[]': readonly string[];
  /** ARRAY of INT32 */
  'i32[]': ArrayLike<number>;
}

/** A metadata value of one type. */
export interface GgufTypedValue<K extends keyof GgufValueTypes> {
  /** its GGUF type */
  type: K;
  /** the value */
  value: GgufValueTypes[K];
}

/** A metadata value with its GGUF type, e.g. `{ type: 'u32', value: 4 }`. */
export type GgufValue = { [K in keyof GgufValueTypes]: GgufTypedValue<K> }[keyof GgufValueTypes];

/** GGUF's value type ids. */
const VALUE_TYPE = { u32: 4, i32: 5, f32: 6, bool: 7, string: 8, array: 9 } as const;

/** A tensor to write: its name, its shape as PyTorch gives it (outermost first), its element type, and its values. */
export interface GgufTensor {
  /** the tensor's name in the file, e.g. 'blk.0.attn_q.weight' */
  name: string;
  /** dimensions outermost first (PyTorch's order); the file stores them innermost first */
  shape: readonly number[];
  /** the element type to store */
  type: GgufTensorType;
  /** the values in row-major order, asked for when the tensor is written */
  data: () => Float32Array;
}

/**
 * Bytes a tensor of `shape` takes stored as `type`.
 * @example
 * ```ts
 * tensorBytes([4096, 4096], 'q8_0'); // 17825792
 * ```
 */
export function tensorBytes(shape: readonly number[], type: GgufTensorType): number {
  const n = shape.reduce((a, b) => a * b, 1);
  if (type === 'f32') return n * 4;
  if (type === 'f16') return n * 2;
  return (n / Q8_0_BLOCK) * Q8_0_BYTES;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/**
 * The IEEE half-precision bits of a float32 value, rounded to nearest, ties to even (as PyTorch's
 * and ggml's conversions): overflow gives infinity, tiny values subnormals or zero, NaN stays NaN.
 * @param x - the value.
 * @returns the 16 bits.
 * @example
 * ```ts
 * toHalfBits(1); // 0x3c00
 * ```
 */
export function toHalfBits(x: number): number {
  f32[0] = x;
  const bits = u32[0]!;
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  let mant = bits & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    // A subnormal half: the value is mant * 2^-24 with the implicit bit made explicit.
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rest = mant & ((1 << shift) - 1);
    const tie = 1 << (shift - 1);
    if (rest > tie || (rest === tie && half & 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  // A carry out of the mantissa moves into the exponent, which is the right rounding (up to infinity).
  if (rest > 0x1000 || (rest === 0x1000 && half & 1)) half++;
  return sign | half;
}

/**
 * The float32 value of half-precision bits.
 * @param h - the 16 bits.
 * @returns the value (a subnormal, an infinity or NaN included).
 * @example
 * ```ts
 * fromHalfBits(0x3c00); // 1
 * ```
 */
export function fromHalfBits(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/**
 * Encodes values as a ggml tensor's bytes. Q8_0: each block of 32 consecutive values (rows must
 * divide into blocks) gets the scale d = max|x| / 127, stored as fp16, and the int8s round(x / d),
 * halves away from zero.
 * @param values - row-major values.
 * @param type - the element type.
 * @returns the bytes, little-endian.
 * @example
 * ```ts
 * encodeTensor(new Float32Array(32).fill(1), 'q8_0').length; // 34
 * ```
 */
export function encodeTensor(values: Float32Array, type: GgufTensorType): Uint8Array {
  if (type === 'f32') return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  if (type === 'f16') {
    const out = new Uint16Array(values.length);
    for (let i = 0; i < values.length; i++) out[i] = toHalfBits(values[i]!);
    return new Uint8Array(out.buffer);
  }
  if (values.length % Q8_0_BLOCK !== 0) throw new RangeError(`q8_0: ${values.length} values do not divide into blocks of ${Q8_0_BLOCK}`);
  const blocks = values.length / Q8_0_BLOCK;
  const out = new Uint8Array(blocks * Q8_0_BYTES);
  const view = new DataView(out.buffer);
  for (let b = 0; b < blocks; b++) {
    const at = b * Q8_0_BLOCK;
    let amax = 0;
    for (let i = 0; i < Q8_0_BLOCK; i++) amax = Math.max(amax, Math.abs(values[at + i]!));
    const d = Math.fround(amax / 127);
    const inv = d ? Math.fround(1 / d) : 0;
    view.setUint16(b * Q8_0_BYTES, toHalfBits(d), true);
    for (let i = 0; i < Q8_0_BLOCK; i++) {
      const q = Math.fround(values[at + i]! * inv);
      view.setInt8(b * Q8_0_BYTES + 2 + i, Math.sign(q) * Math.round(Math.abs(q)));
    }
  }
  return out;
}

/** Builds the header bytes: growing buffer with GGUF's primitive encodings. */
class HeaderWriter {
  private buf = Buffer.alloc(1 << 16);
  length = 0;

  private reserve(n: number): void {
    if (this.length + n <= this.buf.length) return;
    const next = Buffer.alloc(Math.max(this.buf.length * 2, this.length + n));
    this.buf.copy(next, 0, 0, this.length);
    this.buf = next;
  }
  /** Appends `n` bytes written by `write` at the current end. */
  private put(n: number, write: (buf: Buffer, at: number) => void): void {
    this.reserve(n);
    write(this.buf, this.length);
    this.length += n;
  }
  u32(v: number): void {
    this.put(4, (b, at) => b.writeUInt32LE(v, at));
  }
  i32(v: number): void {
    this.put(4, (b, at) => b.writeInt32LE(v, at));
  }
  u64(v: number): void {
    this.put(8, (b, at) => b.writeBigUInt64LE(BigInt(v), at));
  }
  f32(v: number): void {
    this.put(4, (b, at) => b.writeFloatLE(v, at));
  }
  u8(v: number): void {
    this.put(1, (b, at) => b.writeUInt8(v, at));
  }
  string(s: string): void {
    const bytes = Buffer.from(s, 'utf8');
    this.u64(bytes.length);
    this.put(bytes.length, (b, at) => bytes.copy(b, at));
  }
  value(v: GgufValue): void {
    switch (v.type) {
      case 'u32':
        this.u32(VALUE_TYPE.u32);
        this.u32(v.value);
        break;
      case 'i32':
        this.u32(VALUE_TYPE.i32);
        this.i32(v.value);
        break;
      case 'f32':
        this.u32(VALUE_TYPE.f32);
        this.f32(v.value);
        break;
      case 'bool':
        this.u32(VALUE_TYPE.bool);
        this.u8(v.value ? 1 : 0);
        break;
      case 'string':
        this.u32(VALUE_TYPE.string);
        this.string(v.value);
        break;
      case 'string[]':
        this.u32(VALUE_TYPE.array);
        this.u32(VALUE_TYPE.string);
        this.u64(v.value.length);
        for (const s of v.value) this.string(s);
        break;
      case 'i32[]':
        this.u32(VALUE_TYPE.array);
        this.u32(VALUE_TYPE.i32);
        this.u64(v.value.length);
        for (let i = 0; i < v.value.length; i++) this.i32(v.value[i]!);
        break;
    }
  }
  pad(alignment: number): void {
    const n = (alignment - (this.length % alignment)) % alignment;
    this.reserve(n);
    this.buf.fill(0, this.length, this.length + n);
    this.length += n;
  }
  bytes(): Buffer {
    return this.buf.subarray(0, this.length);
  }
}

const align = (n: number) => Math.ceil(n / GGUF_ALIGNMENT) * GGUF_ALIGNMENT;

/**
 * Writes a GGUF v3 file: the metadata (general.alignment added), the tensor infos, then each
 * tensor's data, aligned. Written to a temporary name beside `path`, fsynced, then renamed; nothing
 * is left at `path` or beside it when it fails.
 * @param path - the file to write.
 * @param metadata - key-values in the order to write them.
 * @param tensors - the tensors in the order to write them; each one's data() is called once.
 * @returns the file's size in bytes.
 * @throws RangeError for a Q8_0 tensor whose rows do not divide into blocks, or data of the wrong length; Error naming the path when it cannot be written.
 * @example
 * ```ts
 * writeGguf('tiny.gguf', [['general.architecture', { type: 'string', value: 'llama' }]],
 *   [{ name: 'output_norm.weight', shape: [4], type: 'f32', data: () => new Float32Array(4).fill(1) }]);
 * ```
 */
export function writeGguf(path: string, metadata: ReadonlyArray<readonly [string, GgufValue]>, tensors: readonly GgufTensor[]): number {
  if (endianness() !== 'LE') throw new Error('writeGguf: GGUF is little-endian and this writer copies float arrays as they lie in memory');
  const head = new HeaderWriter();
  const kv: Array<readonly [string, GgufValue]> = [...metadata.filter(([k]) => k !== 'general.alignment'), ['general.alignment', { type: 'u32', value: GGUF_ALIGNMENT }]];
  head.u32(0x46554747); // "GGUF" read as a little-endian uint32
  head.u32(3);
  head.u64(tensors.length);
  head.u64(kv.length);
  for (const [key, value] of kv) {
    head.string(key);
    head.value(value);
  }
  let offset = 0;
  for (const t of tensors) {
    if (t.type === 'q8_0' && (t.shape.at(-1) ?? 0) % Q8_0_BLOCK !== 0)
      throw new RangeError(`writeGguf: ${t.name}: q8_0 needs rows of a multiple of ${Q8_0_BLOCK} values, got ${t.shape.at(-1)}`);
    head.string(t.name);
    head.u32(t.shape.length);
    for (const d of [...t.shape].reverse()) head.u64(d);
    head.u32(GGML_TYPE[t.type]);
    head.u64(offset);
    offset = align(offset + tensorBytes(t.shape, t.type));
  }
  head.pad(GGUF_ALIGNMENT);
  const tmp = `${path}.tmp-${process.pid}`;
  const zeros = new Uint8Array(GGUF_ALIGNMENT);
  let fd: number | undefined;
  try {
    fd = openSync(tmp, 'w');
    writeSync(fd, head.bytes());
    for (const t of tensors) {
      const values = t.data();
      const expected = t.shape.reduce((a, b) => a * b, 1);
      if (values.length !== expected) throw new RangeError(`writeGguf: ${t.name}: ${values.length} values for shape [${t.shape.join(', ')}]`);
      const bytes = encodeTensor(values, t.type);
      writeSync(fd, bytes);
      const pad = align(bytes.length) - bytes.length;
      if (pad) writeSync(fd, zeros, 0, pad);
    }
    fsyncSync(fd);
    closeSync(fd);
    fd = undefined;
    renameSync(tmp, path);
  } catch (e) {
    if (fd !== undefined) closeSync(fd);
    rmSync(tmp, { force: true });
    throw e;
  }
  return head.length + offset;
}

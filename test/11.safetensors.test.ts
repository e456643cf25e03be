// safetensors: round trips of every dtype, files exchanged with the Python safetensors package,
// and corrupt or truncated files reported by name.
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { loadSafetensors, saveSafetensors } from '../lib/model/safetensors.js';
import { memoryStats } from '../lib/runtime.js';
import { randn, tensor, zeros } from '../lib/tensor.js';
import { expectError, python } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'jfa-st-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const values = (t: { toTypedArray(): unknown }) => Array.from(t.toTypedArray() as ArrayLike<number | bigint>);

/** A file with the given header text or bytes (as is, not re-encoded) and data bytes. */
function rawHeaderFile(name: string, header: string | Buffer, data: Buffer): string {
  const json = Buffer.from(header);
  const size = Buffer.alloc(8);
  size.writeBigUInt64LE(BigInt(json.length));
  const path = join(dir, name);
  writeFileSync(path, Buffer.concat([size, json, data]));
  return path;
}

/** A file with the given header object and data bytes. */
function rawFile(name: string, header: unknown, data: Buffer, lengthOverride?: bigint): string {
  const json = Buffer.from(JSON.stringify(header));
  const size = Buffer.alloc(8);
  size.writeBigUInt64LE(lengthOverride ?? BigInt(json.length));
  const path = join(dir, name);
  writeFileSync(path, Buffer.concat([size, json, data]));
  return path;
}

describe('safetensors', () => {
  it('round-trips every dtype, shapes, metadata and the order of the data', () => {
    const tensors = {
      f32: randn([3, 4], { seed: 1 }),
      f64: randn([2], { seed: 2, dtype: 'float64' }),
      bf16: randn([5], { seed: 3 }).to('bfloat16'),
      f16: randn([2, 2], { seed: 4 }).to('float16'),
      i64: tensor(new BigInt64Array([1n, -2n, 2n ** 62n]), [3]),
      i32: tensor(new Int32Array([7, -8]), [2, 1]),
      u8: tensor(new Uint8Array([0, 255]), [2]),
      flag: zeros([2], 'bool'),
      scalar: tensor(new Float32Array([42]), []),
      empty: zeros([0, 3]),
    };
    const path = join(dir, 'all.safetensors');
    saveSafetensors(path, tensors, { format: 'pt', note: 'quote " and \\ and ünïcode' });
    const back = loadSafetensors(path);
    expect(back.names).toEqual(Object.keys(tensors));
    expect(back.metadata).toEqual({ format: 'pt', note: 'quote " and \\ and ünïcode' });
    for (const [name, t] of Object.entries(tensors)) {
      const b = back.tensors[name]!;
      expect(b.dtype, name).toBe(t.dtype);
      expect(b.shape, name).toEqual(t.shape);
      expect(values(b), name).toEqual(values(t));
    }
    expect(readdirSync(dir).filter((f) => f.includes('.tmp-'))).toEqual([]);
  });

  it('Python safetensors reads our file, and we read its file, with the same values', () => {
    const ours = join(dir, 'ours.safetensors');
    saveSafetensors(ours, { w: randn([4, 3], { seed: 5 }), b: randn([3], { seed: 6 }).to('bfloat16') });
    const theirs = join(dir, 'theirs.safetensors');
    const read = python<{ w: number[]; b: number[] }>(`
import json, torch
from safetensors.torch import load_file, save_file
t = load_file(${JSON.stringify(ours)})
torch.manual_seed(9)
save_file({"x": torch.randn(2, 5), "ids": torch.arange(6).reshape(2, 3), "h": torch.randn(3).to(torch.float16)}, ${JSON.stringify(theirs)}, metadata={"format": "pt"})
print(json.dumps({"w": t["w"].flatten().tolist(), "b": t["b"].float().tolist()}))`);
    expect(read.w).toEqual(values(randn([4, 3], { seed: 5 })));
    expect(read.b).toEqual(values(randn([3], { seed: 6 }).to('bfloat16')));
    const mine = loadSafetensors(theirs);
    expect(mine.metadata).toEqual({ format: 'pt' });
    expect(values(mine.tensors.x!)).toEqual(values(randn([2, 5], { seed: 9 })));
    expect(mine.tensors.ids!.dtype).toBe('int64');
    expect(values(mine.tensors.ids!)).toEqual([0n, 1n, 2n, 3n, 4n, 5n]);
    expect(mine.tensors.h!.dtype).toBe('float16');
  });

  it('loads by mapping: a loaded tensor writes privately and never changes the file', () => {
    const path = join(dir, 'map.safetensors');
    saveSafetensors(path, { w: zeros([1024, 256]) });
    const before = readFileSync(path);
    const live = memoryStats().liveTensors;
    const { tensors } = loadSafetensors(path);
    expect(memoryStats().liveTensors).toBe(live + 1);
    const w = tensors.w!;
    w.add(w, 1).dispose();
    expect(readFileSync(path).equals(before)).toBe(true);
    w.dispose();
  });

  it('names the file and the problem for bad files', () => {
    const f32 = Buffer.alloc(16);
    expectError(() => loadSafetensors(join(dir, 'missing.safetensors')), RangeError, 'missing.safetensors: cannot open: No such file or directory');
    writeFileSync(join(dir, 'tiny.safetensors'), Buffer.from([1, 2, 3]));
    expectError(() => loadSafetensors(join(dir, 'tiny.safetensors')), RangeError, 'tiny.safetensors: too short to be a safetensors file (3 bytes)');
    const huge = rawFile('huge.safetensors', {}, f32, 1n << 40n);
    expectError(() => loadSafetensors(huge), RangeError, 'huge.safetensors: header length 1099511627776 does not fit the file');
    const notJson = join(dir, 'notjson.safetensors');
    const header = Buffer.from('{"w": {"dtype": "F32",');
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(header.length));
    writeFileSync(notJson, Buffer.concat([len, header]));
    expectError(() => loadSafetensors(notJson), RangeError, 'notjson.safetensors: header is not valid JSON');
    const truncated = rawFile('truncated.safetensors', { w: { dtype: 'F32', shape: [8], data_offsets: [0, 32] } }, f32);
    expectError(() => loadSafetensors(truncated), RangeError, "truncated.safetensors: tensor 'w' data [0, 32) lies past the end of the data (16 bytes): the file is truncated");
    const f8 = rawFile('f8.safetensors', { w: { dtype: 'F8_E4M3', shape: [16], data_offsets: [0, 16] } }, f32);
    expectError(() => loadSafetensors(f8), RangeError, "f8.safetensors: tensor 'w' has unsupported dtype 'F8_E4M3'");
    const misshapen = rawFile('misshapen.safetensors', { w: { dtype: 'F32', shape: [3], data_offsets: [0, 16] } }, f32);
    expectError(() => loadSafetensors(misshapen), RangeError, "misshapen.safetensors: tensor 'w' of shape [3] and dtype F32 needs 12 bytes but has 16");
    const noOffsets = rawFile('nooffsets.safetensors', { w: { dtype: 'F32', shape: [4] } }, f32);
    expectError(() => loadSafetensors(noOffsets), RangeError, "tensor 'w' has no data_offsets");
  });

  it('reads headers as strict JSON, naming what is wrong and where; a repeated key keeps its last value', () => {
    const f32 = Buffer.alloc(16);
    const w = (shape: string, offsets = '[0, 16]') => `"w": {"dtype": "F32", "shape": ${shape}, "data_offsets": ${offsets}}`;
    const bad = (header: string | Buffer, ...parts: string[]) => {
      const path = rawHeaderFile('strict.safetensors', header, f32);
      expectError(() => loadSafetensors(path), RangeError, 'strict.safetensors: header is not valid JSON (', ...parts);
    };
    bad(`{${w('[+4]')}}`, 'line 1, column 34, byte 33: syntax error while parsing value - invalid literal');
    bad(`{${w('[04]')}}`, 'byte 34: syntax error while parsing array - unexpected number literal');
    bad(`{${w('[.5]')}}`, 'byte 33: syntax error while parsing value - invalid literal');
    bad(`{"a\tb": 1, ${w('[4]')}}`, 'byte 3: syntax error while parsing object key - invalid string: control character U+0009 (HT) must be escaped');
    bad(`{"__metadata__": {"k": "\\ud800"}, ${w('[4]')}}`, 'surrogate U+D800..U+DBFF must be followed by U+DC00..U+DFFF');
    bad(`{"__metadata__": {"k": "\\udc00"}, ${w('[4]')}}`, 'surrogate U+DC00..U+DFFF must follow U+D800..U+DBFF');
    bad(Buffer.concat([Buffer.from('{"__metadata__": {"k": "'), Buffer.from([0xff]), Buffer.from(`"}, ${w('[4]')}}`)]), 'ill-formed UTF-8 byte');
    bad(`{${w('[4]', '[0, 1e5000]')}}`, "number overflow parsing '1e5000': beyond the range of a double");
    bad(`{${w('[4]')}}\u0000junk`, 'byte 62: a NUL byte');
    // JSON.parse takes the last of two equal keys; so do we.
    const dup = `{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "__metadata__": {"k": "1", "k": "2"}, ${w('[4]')}}`;
    const back = loadSafetensors(rawHeaderFile('dup.safetensors', dup, f32));
    const parsed = JSON.parse(dup) as { w: { shape: number[] }; __metadata__: Record<string, string> };
    expect(back.names).toEqual(['w']);
    expect(back.tensors.w!.shape).toEqual(parsed.w.shape);
    expect(back.tensors.w!.shape).toEqual([4]);
    expect(back.metadata).toEqual(parsed.__metadata__);
    expect(back.metadata).toEqual({ k: '2' });
  });

  it('saving refuses bad arguments and leaves no temporary file', () => {
    expectError(() => saveSafetensors(join(dir, 'x.safetensors'), { w: 3 as never }), TypeError, "saveSafetensors: tensors['w'] must be a live Tensor, got number 3");
    expectError(() => saveSafetensors('', {}), TypeError, 'saveSafetensors: path must be a non-empty string');
    expectError(() => saveSafetensors(join(dir, 'no-such-dir', 'x.safetensors'), { w: zeros([1]) }), Error, 'saveSafetensors: cannot create');
    expect(existsSync(join(dir, 'x.safetensors'))).toBe(false);
    expect(readdirSync(dir).filter((f) => f.includes('.tmp-'))).toEqual([]);
  });
});

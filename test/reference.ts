// Runs the PyTorch reference (scripts/reference/kernel_reference.py) on inputs made here, exchanging
// tensors as safetensors files, and compares results with stated tolerances.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { expect } from 'vitest';

import { type Tensor } from '../lib/tensor.js';
import { root, venvPython } from './helpers.js';

export interface Case {
  op: string;
  name: string;
  dtype?: 'float32' | 'bfloat16';
  inputs: Record<string, Tensor>;
  params?: Record<string, unknown>;
}

export interface RefTensor {
  shape: number[];
  data: Float32Array;
}

const CODES: Record<string, string> = { float32: 'F32', int64: 'I64', uint8: 'U8', float64: 'F64', int32: 'I32' };

function writeSafetensors(file: string, tensors: Record<string, Tensor>): void {
  const header: Record<string, unknown> = {};
  const chunks: Buffer[] = [];
  let offset = 0;
  for (const [key, t] of Object.entries(tensors)) {
    const source = t.dtype === 'bfloat16' || t.dtype === 'float16' ? t.to('float32') : t;
    const data = source.toTypedArray();
    const bytes = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    header[key] = { dtype: CODES[source.dtype], shape: t.shape, data_offsets: [offset, offset + bytes.length] };
    chunks.push(bytes);
    offset += bytes.length;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const size = Buffer.alloc(8);
  size.writeBigUInt64LE(BigInt(json.length));
  writeFileSync(file, Buffer.concat([size, Buffer.from(json), ...chunks]));
}

function readSafetensors(file: string): Record<string, RefTensor> {
  const buf = readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString()) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const out: Record<string, RefTensor> = {};
  for (const [key, meta] of Object.entries(header)) {
    if (key === '__metadata__') continue;
    const [b, e] = meta.data_offsets;
    const bytes = buf.subarray(8 + n + b, 8 + n + e);
    out[key] = { shape: meta.shape, data: new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength)) };
  }
  return out;
}

/** Runs every case through the reference in one Python process; returns results keyed "<case>.<output>". */
export function runReference(cases: Case[]): Record<string, RefTensor> {
  const dir = mkdtempSync(join(tmpdir(), 'jfa-ref-'));
  try {
    const tensors: Record<string, Tensor> = {};
    const manifest = cases.map((c) => {
      const inputs: Record<string, string> = {};
      for (const [name, t] of Object.entries(c.inputs)) {
        inputs[name] = `${c.name}.${name}`;
        tensors[inputs[name]!] = t;
      }
      return { op: c.op, name: c.name, dtype: c.dtype ?? 'float32', params: c.params ?? {}, inputs };
    });
    writeFileSync(join(dir, 'cases.json'), JSON.stringify(manifest));
    writeSafetensors(join(dir, 'in.safetensors'), tensors);
    const r = spawnSync(venvPython, [join(root, 'scripts', 'reference', 'kernel_reference.py'), join(dir, 'cases.json'), join(dir, 'in.safetensors'), join(dir, 'out.safetensors')], {
      encoding: 'utf8',
      timeout: 300_000,
    });
    if (r.status !== 0) throw new Error(`reference failed (${r.status}): ${r.stderr}`);
    return readSafetensors(join(dir, 'out.safetensors'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Asserts max |ours - ref| <= rtol * max |ref| + atol, and equal shapes. Relative to the tensor's
 * largest magnitude rather than elementwise: elementwise relative error is meaningless near zero.
 */
export function expectClose(ours: Tensor | null, ref: RefTensor | undefined, rtol: number, label: string, atol = 1e-7): void {
  expect(ref, `${label}: no reference output`).toBeDefined();
  expect(ours, `${label}: no output of ours`).not.toBeNull();
  const mine = ours!.dtype === 'float32' ? ours! : ours!.to('float32');
  expect(mine.shape, `${label}: shape`).toEqual(ref!.shape);
  const a = mine.toTypedArray() as Float32Array;
  let maxRef = 0;
  let maxDiff = 0;
  for (let i = 0; i < a.length; i++) {
    maxRef = Math.max(maxRef, Math.abs(ref!.data[i]!));
    maxDiff = Math.max(maxDiff, Math.abs(a[i]! - ref!.data[i]!));
  }
  expect(Number.isFinite(maxDiff), `${label}: non-finite values`).toBe(true);
  expect(maxDiff, `${label}: max |diff| ${maxDiff} vs max |ref| ${maxRef}`).toBeLessThanOrEqual(rtol * maxRef + atol);
}

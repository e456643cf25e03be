// Tensors in and out: every dtype's round trip, factories, and agreement with PyTorch.
import { describe, expect, it } from 'vitest';

import { randn, type Tensor, tensor, zeros } from '../lib/tensor.js';
import { python } from './helpers.js';

describe('tensor round trips', () => {
  const cases: Array<[string, Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array]> = [
    ['float32', new Float32Array([1.5, -2.25, 3e-8, 1e30, 0, -0])],
    ['float64', new Float64Array([Math.PI, -1e-300, 1e300, 0.1, 2, 3])],
    ['int32', new Int32Array([0, -1, 2147483647, -2147483648, 7, 8])],
    ['int64', new BigInt64Array([0n, -1n, 9007199254740993n, -(2n ** 63n), 2n ** 63n - 1n, 5n])],
    ['uint8', new Uint8Array([0, 1, 127, 128, 254, 255])],
  ];
  for (const [dtype, data] of cases) {
    it(`${dtype}: values, shape and dtype survive exactly`, () => {
      const t = tensor(data, [2, 3]);
      expect(t.dtype).toBe(dtype);
      expect(t.shape).toEqual([2, 3]);
      expect(t.device).toBe('cpu');
      expect(t.nbytes).toBe(data.byteLength);
      const back = t.toTypedArray();
      expect(back.constructor).toBe(data.constructor);
      expect(Array.from(back as ArrayLike<unknown>)).toEqual(Array.from(data as ArrayLike<unknown>));
      t.dispose();
    });
  }

  it('copies the data: later writes to the source do not change the tensor', () => {
    const data = new Float32Array([1, 2, 3]);
    const t = tensor(data);
    data[0] = 99;
    expect(Array.from(t.toTypedArray() as Float32Array)).toEqual([1, 2, 3]);
  });

  it('respects the byte offset of a typed-array view', () => {
    const buffer = new Float32Array([9, 9, 1, 2, 3, 4]).buffer;
    const t = tensor(new Float32Array(buffer, 8, 4), [2, 2]);
    expect(Array.from(t.toTypedArray() as Float32Array)).toEqual([1, 2, 3, 4]);
  });

  it('handles scalars, empty tensors and number[]', () => {
    expect(tensor(new Float32Array([7]), []).shape).toEqual([]);
    const empty = tensor(new Float32Array(0), [0, 3]);
    expect(empty.shape).toEqual([0, 3]);
    expect(empty.toTypedArray().length).toBe(0);
    expect(Array.from(tensor([1, 2, 3]).toTypedArray() as Float32Array)).toEqual([1, 2, 3]);
  });

  it('zeros of each dtype', () => {
    expect(Array.from(zeros([2, 2], 'int32').toTypedArray() as Int32Array)).toEqual([0, 0, 0, 0]);
    expect(zeros([3]).dtype).toBe('float32');
    expect(zeros([2], 'bool').toTypedArray()).toEqual(new Uint8Array([0, 0]));
  });
});

describe('agreement with PyTorch', () => {
  const ref = python<{ randn: number[]; bf16: number[]; f16: number[]; seed7: number[] }>(`
import json, torch
torch.manual_seed(1234)
r = torch.randn(3, 5)
x = torch.tensor([1.0, 1.00390625, 1.001, 3.14159265, -65504.0, 1e-3, 65519.0, 1e-8])
torch.manual_seed(7)
print(json.dumps({"randn": r.flatten().tolist(),
                  "bf16": x.to(torch.bfloat16).float().tolist(),
                  "f16": x.to(torch.float16).float().tolist(),
                  "seed7": torch.randn(4, dtype=torch.float64).tolist()}))`);

  const values = (t: Tensor) => Array.from(t.toTypedArray() as Float32Array);

  it('randn with a seed gives exactly torch.manual_seed(seed); torch.randn(shape)', () => {
    expect(values(randn([3, 5], { seed: 1234 }))).toEqual(ref.randn.map(Math.fround));
    expect(Array.from(randn([4], { seed: 7, dtype: 'float64' }).toTypedArray() as Float64Array)).toEqual(ref.seed7);
  });

  it('seeds: same seed same values, other seed other values, no seed varies', () => {
    expect(values(randn([8], { seed: 5 }))).toEqual(values(randn([8], { seed: 5n })));
    expect(values(randn([8], { seed: 5 }))).not.toEqual(values(randn([8], { seed: 6 })));
    expect(values(randn([8]))).not.toEqual(values(randn([8])));
  });

  it('bfloat16 and float16 round like torch and come back as float32', () => {
    const x = tensor([1.0, 1.00390625, 1.001, 3.14159265, -65504.0, 1e-3, 65519.0, 1e-8]);
    const b = x.to('bfloat16');
    expect(b.dtype).toBe('bfloat16');
    expect(b.nbytes).toBe(16);
    expect(b.toTypedArray()).toBeInstanceOf(Float32Array);
    expect(values(b)).toEqual(ref.bf16);
    const h = x.to('float16');
    expect(h.dtype).toBe('float16');
    expect(values(h)).toEqual(ref.f16);
    expect(values(b.to('float32'))).toEqual(ref.bf16);
  });
});

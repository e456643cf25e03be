// The small op set, checked against values worked out by hand.
import { describe, expect, it } from 'vitest';

import { add, matmul, sum, tensor, zeros } from '../lib/tensor.js';

const values = (t: { toTypedArray(): unknown }) => Array.from(t.toTypedArray() as Float32Array);

describe('ops', () => {
  const a = tensor([1, 2, 3, 4, 5, 6], [2, 3]);
  const b = tensor([1, 0, 0, 1, 1, 1], [3, 2]);

  it('matmul: 2x3 @ 3x2', () => {
    const c = matmul(a, b);
    expect(c.shape).toEqual([2, 2]);
    expect(values(c)).toEqual([4, 5, 10, 11]);
  });

  it('matmul: matrix @ vector and batched broadcasting', () => {
    expect(values(matmul(a, tensor([1, 1, 1])))).toEqual([6, 15]);
    const batch = tensor([1, 2, 3, 4, 5, 6, 1, 0, 0, 0, 1, 0], [2, 2, 3]);
    const c = matmul(batch, b);
    expect(c.shape).toEqual([2, 2, 2]);
    expect(values(c)).toEqual([4, 5, 10, 11, 1, 0, 0, 1]);
  });

  it('matmul in float64 and bfloat16', () => {
    expect(Array.from(matmul(a.to('float64'), b.to('float64')).toTypedArray() as Float64Array)).toEqual([4, 5, 10, 11]);
    const c = matmul(a.to('bfloat16'), b.to('bfloat16'));
    expect(c.dtype).toBe('bfloat16');
    expect(values(c)).toEqual([4, 5, 10, 11]);
  });

  it('add with alpha and broadcasting', () => {
    const row = tensor([10, 20, 30]);
    expect(values(add(a, row))).toEqual([11, 22, 33, 14, 25, 36]);
    expect(values(a.add(row, -0.5))).toEqual([-4, -8, -12, -1, -5, -9]);
  });

  it('add promotes types like torch (int32 + float32 -> float32)', () => {
    const c = add(tensor(new Int32Array([1, 2]), [2]), tensor([0.5, 0.25]));
    expect(c.dtype).toBe('float32');
    expect(values(c)).toEqual([1.5, 2.25]);
  });

  it('sum: all, one dim, several dims, negative dims, keepdim', () => {
    expect(values(sum(a))).toEqual([21]);
    expect(sum(a).shape).toEqual([]);
    expect(values(sum(a, 0))).toEqual([5, 7, 9]);
    expect(values(sum(a, -1))).toEqual([6, 15]);
    expect(values(sum(a, [0, 1]))).toEqual([21]);
    expect(sum(a, 1, true).shape).toEqual([2, 1]);
    expect(sum(a, undefined, true).shape).toEqual([1, 1]);
    expect(values(sum(zeros([0, 3])))).toEqual([0]);
  });

  it('sum of int32 gives int64 like torch', () => {
    const s = sum(tensor(new Int32Array([1, 2, 3]), [3]));
    expect(s.dtype).toBe('int64');
    expect(s.toTypedArray()).toEqual(new BigInt64Array([6n]));
  });

  it('to() converts and keeps values', () => {
    const i = tensor([1.7, -2.2]).to('int32');
    expect(i.dtype).toBe('int32');
    expect(Array.from(i.toTypedArray() as Int32Array)).toEqual([1, -2]);
  });
});

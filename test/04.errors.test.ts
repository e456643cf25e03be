// Bad input: each case throws the right error class with a message naming the problem,
// and the process carries on (the last test still computes).
import { describe, expect, it } from 'vitest';

import { pcgrad, pcgradOrders, tokenCrossEntropy } from '../lib/kernels.js';
import { LlamaModel } from '../lib/model/llama.js';
import { native } from '../lib/native.js';
import { add, matmul, randn, sum, tensor, to, zeros } from '../lib/tensor.js';
import { expectError } from './helpers.js';

const m23 = () => randn([2, 3], { seed: 1 });

describe('bad input gives clear errors', () => {
  it('1. matmul of 2x3 by 2x3', () => {
    expectError(() => matmul(m23(), m23()), RangeError, 'matmul: shapes [2, 3] and [2, 3] cannot be multiplied');
  });

  it('2. an Int32Array tensor where a float tensor is required', () => {
    const ints = tensor(new Int32Array([1, 2, 3, 4, 5, 6]), [3, 2]);
    expectError(() => matmul(m23(), ints), TypeError, 'matmul: b must be a floating-point tensor, got int32');
  });

  it('3. a disposed tensor, as an argument and as a receiver', () => {
    const t = m23();
    t.dispose();
    expectError(() => add(t, m23()), TypeError, 'add: a is a disposed tensor');
    expectError(() => t.shape, TypeError, 'shape: the tensor is disposed');
    expectError(() => t.toTypedArray(), TypeError, 'toTypedArray: the tensor is disposed');
    expect(t.disposed).toBe(true);
    t.dispose(); // twice is fine
  });

  it('4. data length that does not match the shape', () => {
    expectError(() => tensor(new Float32Array(5), [2, 3]), RangeError, 'tensor: shape [2, 3] holds 6 elements but the data has 5');
  });

  it('5. an unsupported typed array, and data that is no typed array', () => {
    expectError(() => tensor(new Int16Array(4) as never, [4]), TypeError, 'tensor: Int16Array(4) is not supported');
    expectError(() => tensor('abc' as never, [3]), TypeError, "tensor: data must be a Float32Array", "got string 'abc'");
  });

  it('6. bad shapes: negative, fractional, not a number, not an array', () => {
    expectError(() => zeros([2, -1]), RangeError, 'zeros: shape[1] must be a non-negative integer, got number -1');
    expectError(() => zeros([1.5]), RangeError, 'zeros: shape[0] must be a non-negative integer, got number 1.5');
    expectError(() => randn([2, '3' as never]), TypeError, "randn: shape[1] must be an integer, got string '3'");
    expectError(() => zeros(7 as never), TypeError, 'zeros: shape must be an array of integers, got number 7');
  });

  it('7. something that is not a tensor where a tensor is required', () => {
    expectError(() => matmul(3 as never, m23()), TypeError, 'matmul: a must be a Tensor, got number 3');
    expectError(() => add(m23(), null as never), TypeError, 'add: b must be a Tensor, got null');
    expectError(() => sum({} as never), TypeError, 'sum: a must be a Tensor, got object');
  });

  it('8. an unknown dtype', () => {
    expectError(() => to(m23(), 'float8' as never), TypeError, "to: unknown dtype 'float8'", 'float32, float64, bfloat16');
    expectError(() => zeros([2], 42 as never), TypeError, 'zeros: dtype must be a string, got number 42');
    expectError(() => randn([2], { dtype: 'int32' }), TypeError, 'randn: dtype must be floating-point, got int32');
  });

  it('9. shapes that cannot broadcast', () => {
    expectError(() => add(m23(), zeros([4])), RangeError, 'add: shapes [2, 3] and [4] cannot be broadcast together');
  });

  it('10. sum over a dim that does not exist, or twice over one', () => {
    expectError(() => sum(m23(), 2), RangeError, 'sum: dim 2 is out of range for a tensor of shape [2, 3] (valid: -2..1)');
    expectError(() => sum(m23(), [1, -1]), RangeError, 'sum: dim -1 is listed twice');
    expectError(() => sum(m23(), 0.5 as never), RangeError, 'sum: dims must be an integer, got number 0.5');
  });

  it('11. mixed dtypes in matmul', () => {
    expectError(() => matmul(m23(), randn([3, 2], { dtype: 'float64' })), TypeError, 'matmul: b is float64 but a is float32');
  });

  it('12. a bad seed or alpha', () => {
    expectError(() => randn([2], { seed: -1 }), RangeError, 'randn: seed must be a non-negative integer, got number -1');
    expectError(() => randn([2], { seed: 2n ** 70n }), RangeError, 'randn: seed must fit in 64 unsigned bits');
    expectError(() => add(m23(), m23(), Number.NaN), RangeError, 'add: alpha must be finite');
  });

  it('13. an allocation far beyond memory', () => {
    expectError(() => zeros([1 << 20, 1 << 20, 1 << 20]), RangeError, 'zeros: out of memory: cannot allocate 4611686018427387904 bytes');
    expectError(() => zeros([2 ** 40, 2 ** 40]), RangeError, 'zeros: shape [1099511627776, 1099511627776] has more elements than fit in int64');
  });

  it('14. a tensor id cannot be forged: numbers the addon never issued are refused', () => {
    const a = m23();
    const raw = native().add as (a: unknown, b: unknown) => unknown;
    // the next generation of a live id's slot, a slot never handed out, a fraction, a small integer
    for (const forged of [a.handle + 2 ** 24, 2 ** 24 + (2 ** 24 - 1), a.handle + 0.5, 7])
      expectError(() => raw(forged, a.handle), TypeError, `add: a must be a Tensor, got number ${forged}`);
    expectError(() => native().dispose(12 as never), TypeError, 'dispose: t must be a Tensor, got number 12');
    a.dispose();
  });

  it('15. missing dtype in to(), wrong thread count', () => {
    expectError(() => to(m23(), undefined as never), TypeError, 'to: dtype is required');
    expectError(() => native().setNumThreads(0), RangeError, 'setNumThreads: n must be an integer from 1 to 4096, got number 0');
  });

  it('16. integers: a fractional or out-of-range value is refused, never truncated', async () => {
    const model = LlamaModel.random({ vocab_size: 16, hidden_size: 8, intermediate_size: 16, num_hidden_layers: 2, num_attention_heads: 2, num_key_value_heads: 2 }, { seed: 1 });
    const A = zeros([2, 2, 8]);
    const B = zeros([2, 8, 2]);
    expectError(() => model.setLatentPool(1.5, A, B), RangeError, 'setLatentPool: layer must be an integer, got number 1.5');
    const ids = tensor(new BigInt64Array([1n, 2n]), [1, 2]);
    await expect(model.generate(ids, { padTokenId: 1.5 })).rejects.toThrow('generate: padTokenId must be a non-negative integer, got number 1.5');
    await expect(model.generate(ids, { maxNewTokens: 0 })).rejects.toThrow('generate: maxNewTokens must be a positive integer, got number 0');
    expectError(() => model.addLora({ r: 2.5 }), RangeError, 'addLora: r must be a positive integer, got number 2.5');
    const logits = randn([2, 5]);
    const targets = tensor(new BigInt64Array([1n, 2n]), [2]);
    expectError(() => tokenCrossEntropy(logits, targets, { ignoreIndex: -100.5 }), RangeError, 'tokenCrossEntropy: ignoreIndex must be an integer, got number -100.5');
    const g = [[randn([3])], [randn([3])]];
    expectError(() => pcgrad(g, { orders: [[1.5], [0]] }), RangeError, 'pcgrad: options.orders[0][0] must be an integer from 0 to 1, got number 1.5');
    expectError(() => pcgrad(g, { orders: [[2], [0]] }), RangeError, 'pcgrad: options.orders[0][0] must be an integer from 0 to 1, got number 2');
    expectError(() => pcgradOrders(2.5), RangeError, 'pcgradOrders: n must be an integer from 1 to 4096, got number 2.5');
    model.dispose();
  });

  it('after all of that the process still computes', () => {
    expect(Array.from(matmul(tensor([1, 2], [1, 2]), tensor([3, 4], [2, 1])).toTypedArray() as Float32Array)).toEqual([11]);
  });
});

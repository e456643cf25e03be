// The tensor API users see: a Tensor class over the native handle, factories, ops and scopes.
// Arguments are checked natively (one source of truth for messages); this layer adds ownership:
// dispose(), `using`, and scope()/scopeAsync() that free every tensor made inside them.
import { AsyncLocalStorage } from 'node:async_hooks';

import { type Dtype, type NativeTensor, native, type TensorData } from './native.js';

export type { Dtype, TensorData };

export class Tensor implements Disposable {
  /** @internal Use the factories (tensor, zeros, randn) or ops to make tensors. */
  constructor(readonly handle: NativeTensor) {
    track(this);
  }

  get shape(): number[] {
    return this.handle.shape;
  }
  get dtype(): Dtype {
    return this.handle.dtype;
  }
  /** "cpu", "cuda:0", ... */
  get device(): string {
    return this.handle.device;
  }
  /** Bytes of native memory this tensor's elements occupy. */
  get nbytes(): number {
    return this.handle.nbytes;
  }
  get disposed(): boolean {
    return this.handle.disposed;
  }

  /** A copy of the elements in row-major order. bfloat16/float16 come back as Float32Array. */
  toTypedArray(): TensorData {
    return this.handle.toTypedArray();
  }

  matmul(other: Tensor): Tensor {
    return matmul(this, other);
  }
  add(other: Tensor, alpha?: number): Tensor {
    return add(this, other, alpha);
  }
  sum(dims?: number | readonly number[], keepdim?: boolean): Tensor {
    return sum(this, dims, keepdim);
  }
  to(dtype: Dtype): Tensor {
    return to(this, dtype);
  }

  /** Whether gradients are recorded for computations using this tensor. */
  get requiresGrad(): boolean {
    return native().requiresGrad(this.handle);
  }
  /** Marks this tensor as a leaf whose gradient backward() accumulates. Returns this. */
  setRequiresGrad(flag = true): this {
    native().setRequiresGrad(this.handle, flag);
    return this;
  }
  /** The accumulated gradient (a new handle on it, to dispose), or null before any backward(). */
  get grad(): Tensor | null {
    const g = native().grad(this.handle);
    return g ? new Tensor(g) : null;
  }
  /** Overwrites this tensor's values with `src`'s (same shape), outside any gradient graph. Returns this. */
  copyFrom(src: Tensor): this {
    native().copyInto(this.handle, h(src));
    return this;
  }
  /** Replaces the accumulated gradient (undefined drops it). */
  setGrad(grad: Tensor | undefined): void {
    native().setGrad(this.handle, grad ? h(grad) : undefined);
  }
  /** Drops the accumulated gradient. */
  zeroGrad(): void {
    native().zeroGrad(this.handle);
  }
  /** Back-propagates from this tensor (a scalar, or with `gradient` of its shape) into the leaves. */
  backward(gradient?: Tensor): void {
    native().backward(this.handle, gradient ? h(gradient) : undefined);
  }
  /** The same values, cut from the gradient graph. */
  detach(): Tensor {
    return new Tensor(native().detach(this.handle));
  }

  /** Frees the native memory now. Safe to call twice; any later use throws. */
  dispose(): void {
    this.handle.dispose();
    currentScope()?.delete(this);
  }
  [Symbol.dispose](): void {
    this.dispose();
  }
}

/** The native handle of a Tensor; anything else is passed through for the addon to reject by name. */
export const h = (t: unknown): NativeTensor => (t instanceof Tensor ? t.handle : (t as NativeTensor));
/** h() of an optional tensor: undefined stays undefined. */
export const optionalHandle = (t: Tensor | undefined): NativeTensor | undefined => (t === undefined ? undefined : h(t));

/**
 * A tensor holding a copy of `data`. The dtype follows the array: Float32Array -> float32,
 * Float64Array -> float64, Int32Array -> int32, BigInt64Array -> int64, Uint8Array -> uint8.
 * A plain number[] becomes float32. `shape` defaults to [data.length].
 */
export function tensor(data: TensorData | readonly number[], shape?: readonly number[]): Tensor {
  const array = Array.isArray(data) ? Float32Array.from(data as number[]) : (data as TensorData);
  return new Tensor(native().fromTypedArray(array, shape ?? [array?.length ?? 0]));
}

export function zeros(shape: readonly number[], dtype: Dtype = 'float32'): Tensor {
  return new Tensor(native().zeros(shape, dtype));
}

export interface RandnOptions {
  dtype?: Dtype;
  /** With a seed the values depend only on (seed, shape, dtype): they match torch.manual_seed(seed); torch.randn(shape). */
  seed?: number | bigint;
}

/** Samples from the standard normal distribution. */
export function randn(shape: readonly number[], options: RandnOptions = {}): Tensor {
  return new Tensor(native().randn(shape, options.dtype ?? 'float32', options.seed));
}

/** Matrix product with torch.matmul's broadcasting rules. */
export function matmul(a: Tensor, b: Tensor): Tensor {
  return new Tensor(native().matmul(h(a), h(b)));
}

/** matmul on the libuv thread pool: the event loop keeps running while it computes. */
export async function matmulAsync(a: Tensor, b: Tensor): Promise<Tensor> {
  return new Tensor(await native().matmulAsync(h(a), h(b)));
}

/** a + alpha * b, broadcasting. */
export function add(a: Tensor, b: Tensor, alpha = 1): Tensor {
  return new Tensor(native().add(h(a), h(b), alpha));
}

/** Sum over `dims` (all of them when omitted). */
export function sum(a: Tensor, dims?: number | readonly number[], keepdim = false): Tensor {
  return new Tensor(native().sum(h(a), dims, keepdim));
}

/** A copy converted to `dtype`. */
export function to(a: Tensor, dtype: Dtype): Tensor {
  return new Tensor(native().to(h(a), dtype));
}

// ---- Scopes -------------------------------------------------------------------------------------

type Scope = Set<Tensor>;
const syncScopes: Scope[] = [];
let asyncScopes: AsyncLocalStorage<Scope> | undefined; // created on first use: it costs every promise a little

function currentScope(): Scope | undefined {
  return syncScopes[syncScopes.length - 1] ?? asyncScopes?.getStore();
}

function track(t: Tensor): void {
  currentScope()?.add(t);
}

/** Tensors directly in `value` (itself, an array's items, an object's own values). */
function returnedTensors(value: unknown): Tensor[] {
  if (value instanceof Tensor) return [value];
  if (Array.isArray(value)) return value.filter((v): v is Tensor => v instanceof Tensor);
  if (value && typeof value === 'object' && Object.getPrototypeOf(value) === Object.prototype)
    return Object.values(value).filter((v): v is Tensor => v instanceof Tensor);
  return [];
}

function close(scope: Scope, result: unknown): void {
  const kept = new Set(returnedTensors(result));
  for (const t of scope) if (!kept.has(t)) t.dispose();
  const parent = currentScope();
  for (const t of kept) parent?.add(t);
}

/**
 * Runs `fn` and disposes every tensor created while it ran, except those it returns (a Tensor,
 * or an array or plain object holding Tensors), which move to the enclosing scope.
 * For async functions use scopeAsync.
 */
export function scope<T>(fn: () => T): T {
  const s: Scope = new Set();
  syncScopes.push(s);
  let result: T | undefined;
  try {
    result = fn();
  } finally {
    syncScopes.pop();
    close(s, result);
  }
  if (result && typeof (result as { then?: unknown }).then === 'function')
    throw new TypeError('scope: fn returned a Promise; use scopeAsync for async functions');
  return result as T;
}

/** scope() for async functions: tracks tensors created in fn's async context, across awaits. */
export async function scopeAsync<T>(fn: () => Promise<T>): Promise<T> {
  asyncScopes ??= new AsyncLocalStorage<Scope>();
  const s: Scope = new Set();
  let result: T | undefined;
  try {
    result = await asyncScopes.run(s, fn);
  } finally {
    close(s, result);
  }
  return result;
}

/** Removes `t` from the current scope so that it outlives it. Returns t. */
export function keep<T extends Tensor>(t: T): T {
  currentScope()?.delete(t);
  return t;
}

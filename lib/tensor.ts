// The tensor API users see: a Tensor class over the native handle, factories, ops and scopes.
// Arguments are checked natively (one source of truth for messages); this layer adds ownership:
// dispose(), `using`, and scope()/scopeAsync() that free every tensor made inside them.
import { AsyncLocalStorage } from 'node:async_hooks';

import { checkDevice, type Device } from './device.js';
import { type Dtype, type NativeTensor, native, type TensorData } from './native.js';

export type { Dtype, TensorData };

// ---- Collection by the GC --------------------------------------------------------------------------

// A tensor the GC collects without dispose() is freed by this registry. Registering costs several
// times a 1-element op, so tensors are registered in batches, and those disposed before their batch
// is registered (nearly all, in code that disposes or uses scopes) never are. A batch is registered
// when it holds 256 tensors or when the current synchronous run of JS ends (a microtask). Until then
// it holds its tensors, so an undisposed one may be freed one collection later than it would be
// otherwise (the registry's callbacks never run before the synchronous run ends in either case).
// A late callback for a tensor disposed after registration finds its id disposed and does nothing.
const registry = new FinalizationRegistry<NativeTensor>((id) => {
  try {
    native().dispose(id);
  } catch {
    // a Tensor made around a number the addon never issued (the constructor is internal) owns nothing
  }
});
const BATCH = 256;
const unregistered: Tensor[] = [];
let flushQueued = false;
let disposedHere: (t: Tensor) => boolean;

function register(): void {
  for (const t of unregistered) if (!disposedHere(t)) registry.register(t, t.handle);
  unregistered.length = 0;
}

function watch(t: Tensor): void {
  if (unregistered.push(t) >= BATCH) register();
  if (!flushQueued) {
    flushQueued = true;
    queueMicrotask(() => {
      flushQueued = false;
      register();
    });
  }
}

/**
 * An n-dimensional array in libtorch's memory. Tensors own native memory: free it with
 * {@link Tensor.dispose} (or `using`), or make them inside {@link scope} / {@link scopeAsync}.
 * Make them with {@link tensor}, {@link zeros}, {@link randn} or an op.
 *
 * @example
 * ```ts
 * import { tensor } from 'jfa-torch';
 * using a = tensor([1, 2, 3, 4], [2, 2]);
 * using b = a.matmul(a);
 * console.log(b.shape, b.toTypedArray()); // [2, 2] Float32Array [7, 10, 15, 22]
 * ```
 */
export class Tensor implements Disposable {
  /** Set by dispose(): such a tensor needs no registration with the GC. */
  #disposedHere = false;
  static {
    disposedHere = (t) => t.#disposedHere;
  }

  /**
   * @internal Use the factories (tensor, zeros, randn) or ops to make tensors.
   * @param handle - the addon's tensor id; this object owns it and frees it on dispose() or when
   *   the GC collects the object, so one id must not be given to two Tensors.
   */
  constructor(readonly handle: NativeTensor) {
    track(this);
    watch(this);
  }

  /**
   * The size of each dimension, outermost first; `[]` for a scalar.
   * @throws TypeError when the tensor is disposed.
   */
  get shape(): number[] {
    return native().shape(this.handle);
  }
  /** The element type ("float32", "int64", ...). */
  get dtype(): Dtype {
    return native().dtype(this.handle);
  }
  /** "cpu", "cuda:0", ... */
  get device(): string {
    return native().device(this.handle);
  }
  /** Bytes of native memory this tensor's elements occupy. */
  get nbytes(): number {
    return native().nbytes(this.handle);
  }
  /** Whether {@link Tensor.dispose} has freed this tensor. */
  get disposed(): boolean {
    return native().isDisposed(this.handle);
  }

  /**
   * A copy of the elements in row-major order. bfloat16/float16 come back as Float32Array.
   * @returns a new typed array matching the dtype (Float32Array, Float64Array, Int32Array, BigInt64Array or Uint8Array).
   * @throws TypeError when the tensor is disposed.
   * @example
   * ```ts
   * zeros([2, 3]).toTypedArray(); // Float32Array(6) [0, 0, 0, 0, 0, 0]
   * ```
   */
  toTypedArray(): TensorData {
    return native().toTypedArray(this.handle);
  }

  /**
   * Matrix product `this @ other`; see {@link matmul}.
   * @param other - the right-hand factor.
   * @returns a new tensor.
   * @throws RangeError when the shapes cannot be multiplied; TypeError for a non-float or mismatched dtype.
   * @example
   * ```ts
   * const y = randn([4, 8]).matmul(randn([8, 2])); // shape [4, 2]
   * ```
   */
  matmul(other: Tensor): Tensor {
    return matmul(this, other);
  }
  /**
   * `this + alpha * other`, broadcasting; see {@link add}.
   * @param other - the tensor to add.
   * @param alpha - its multiplier (default 1).
   * @returns a new tensor.
   * @throws RangeError when the shapes cannot be broadcast or alpha is not finite.
   * @example
   * ```ts
   * tensor([1, 2]).add(tensor([10, 20]), 0.5).toTypedArray(); // [6, 12]
   * ```
   */
  add(other: Tensor, alpha?: number): Tensor {
    return add(this, other, alpha);
  }
  /**
   * Sum over `dims`; see {@link sum}.
   * @param dims - the dimension(s) to reduce (all when omitted); negative counts from the end.
   * @param keepdim - keep reduced dimensions with size 1.
   * @returns a new tensor.
   * @throws RangeError for a dimension out of range or listed twice.
   * @example
   * ```ts
   * tensor([1, 2, 3, 4], [2, 2]).sum(1).toTypedArray(); // [3, 7]
   * ```
   */
  sum(dims?: number | readonly number[], keepdim?: boolean): Tensor {
    return sum(this, dims, keepdim);
  }
  /**
   * A copy converted to a dtype or moved to a device; see {@link to}.
   * @param dtypeOrDevice - the element type of the copy ('float32', ...) or its device ('cpu', 'cuda:0').
   * @returns a new tensor.
   * @throws TypeError for an unknown dtype.
   * @example
   * ```ts
   * tensor([1.5, 2.5]).to('bfloat16').dtype; // 'bfloat16'
   * ```
   */
  to(dtypeOrDevice: Dtype | Device): Tensor {
    return to(this, dtypeOrDevice);
  }

  /** Whether gradients are recorded for computations using this tensor. */
  get requiresGrad(): boolean {
    return native().requiresGrad(this.handle);
  }
  /**
   * Marks this tensor as a leaf whose gradient backward() accumulates.
   * @param flag - true (the default) to record gradients, false to stop.
   * @returns this tensor.
   * @example
   * ```ts
   * const w = randn([3]).setRequiresGrad();
   * w.sum().backward();
   * w.grad?.toTypedArray(); // [1, 1, 1]
   * ```
   */
  setRequiresGrad(flag = true): this {
    native().setRequiresGrad(this.handle, flag);
    return this;
  }
  /** The accumulated gradient (a new handle on it, to dispose), or null before any backward(). */
  get grad(): Tensor | null {
    const g = native().grad(this.handle);
    return g ? new Tensor(g) : null;
  }
  /**
   * Overwrites this tensor's values with `src`'s (same shape), outside any gradient graph.
   * @param src - the values to copy.
   * @returns this tensor.
   * @throws RangeError when the shapes differ; TypeError when either tensor is disposed.
   * @example
   * ```ts
   * const w = zeros([2]);
   * w.copyFrom(tensor([3, 4])); // w is now [3, 4]
   * ```
   */
  copyFrom(src: Tensor): this {
    native().copyInto(this.handle, h(src));
    return this;
  }
  /**
   * Replaces the accumulated gradient.
   * @param grad - the new gradient, of this tensor's shape; undefined drops it.
   * @throws RangeError when the shape differs.
   * @example
   * ```ts
   * const w = zeros([2]).setRequiresGrad();
   * w.setGrad(tensor([0.5, -0.5]));
   * ```
   */
  setGrad(grad: Tensor | undefined): void {
    native().setGrad(this.handle, grad ? h(grad) : undefined);
  }
  /**
   * Drops the accumulated gradient.
   * @example
   * ```ts
   * const w = tensor([1, 2, 3]).setRequiresGrad();
   * w.matmul(w).backward();
   * w.zeroGrad(); // w.grad is null again
   * ```
   */
  zeroGrad(): void {
    native().zeroGrad(this.handle);
  }
  /**
   * Back-propagates from this tensor into the leaves that require gradients.
   * @param gradient - the gradient of this tensor, of its shape; omit it for a scalar.
   * @throws TypeError when nothing in the graph requires a gradient; RangeError for a non-scalar without `gradient`.
   * @example
   * ```ts
   * const x = tensor([1, 2, 3]).setRequiresGrad();
   * x.matmul(x).backward(); // x.grad = 2x
   * ```
   */
  backward(gradient?: Tensor): void {
    native().backward(this.handle, gradient ? h(gradient) : undefined);
  }
  /**
   * The same values, cut from the gradient graph.
   * @returns a new tensor sharing this one's storage.
   * @example
   * ```ts
   * const w = tensor([1, 2, 3]).setRequiresGrad();
   * const frozen = w.detach(); // frozen.requiresGrad === false
   * ```
   */
  detach(): Tensor {
    return new Tensor(native().detach(this.handle));
  }

  /**
   * Frees the native memory now. Safe to call twice; any later use throws a TypeError.
   * @example
   * ```ts
   * const t = zeros([1024, 1024]);
   * t.dispose(); // 4 MB freed without waiting for the GC
   * ```
   */
  dispose(): void {
    native().dispose(this.handle);
    this.#disposedHere = true;
    currentScope()?.delete(this);
  }

  /**
   * {@link Tensor.dispose}, for `using` declarations.
   * @example
   * ```ts
   * { using t = zeros([8]); } // freed at the end of the block
   * ```
   */
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
 * A plain number[] becomes float32.
 * @param data - the elements in row-major order.
 * @param shape - the dimensions (default `[data.length]`); their product must equal the data's length.
 * @param options - device: where the tensor lives ('cpu' by default, 'cuda', 'cuda:N').
 * @returns a new tensor.
 * @throws TypeError for an unsupported array type; RangeError when `shape` does not fit the data;
 *   Error for a CUDA device this process cannot use (see {@link checkDevice}).
 * @example
 * ```ts
 * const m = tensor(new Float64Array([1, 2, 3, 4, 5, 6]), [2, 3]); // float64, shape [2, 3]
 * const v = tensor([0.5, 1.5]); // float32, shape [2]
 * ```
 */
export function tensor(data: TensorData | readonly number[], shape?: readonly number[], options: DeviceOption = {}): Tensor {
  const array = Array.isArray(data) ? Float32Array.from(data as number[]) : (data as TensorData);
  const device = options.device === undefined ? undefined : checkDevice(options.device, 'tensor');
  return new Tensor(native().fromTypedArray(array, shape ?? [array?.length ?? 0], device));
}

/**
 * A tensor of zeros.
 * @param shape - the dimensions (non-negative integers).
 * @param dtype - the element type (default float32).
 * @param options - device ('cpu' by default).
 * @returns a new tensor.
 * @throws RangeError for a negative or fractional size, or one too large to allocate; TypeError for an unknown dtype.
 * @example
 * ```ts
 * const z = zeros([2, 3], 'int64');
 * ```
 */
export function zeros(shape: readonly number[], dtype: Dtype = 'float32', options: DeviceOption = {}): Tensor {
  const device = options.device === undefined ? undefined : checkDevice(options.device, 'zeros');
  return new Tensor(native().zeros(shape, dtype, device));
}

/** Options of {@link randn}. */
export interface RandnOptions {
  /** A floating-point element type (default float32). */
  dtype?: Dtype;
  /** With a seed the values depend only on (seed, shape, dtype): they match torch.manual_seed(seed); torch.randn(shape). */
  seed?: number | bigint;
  /** Where the tensor lives ('cpu' by default). The values are drawn on the CPU, so a seed gives the same values on every device. */
  device?: Device;
}

/** Where a new tensor lives. */
export interface DeviceOption {
  /** 'cpu' (the default), 'cuda' or 'cuda:N' */
  device?: Device;
}

/**
 * Samples from the standard normal distribution.
 * @param shape - the dimensions.
 * @param options - dtype and seed.
 * @returns a new tensor.
 * @throws TypeError for a non-floating dtype; RangeError for a bad shape or seed.
 * @example
 * ```ts
 * const x = randn([2, 4], { seed: 0 }); // torch.manual_seed(0); torch.randn(2, 4)
 * ```
 */
export function randn(shape: readonly number[], options: RandnOptions = {}): Tensor {
  const device = options.device === undefined ? undefined : checkDevice(options.device, 'randn');
  return new Tensor(native().randn(shape, options.dtype ?? 'float32', options.seed, device));
}

/**
 * Matrix product with torch.matmul's broadcasting rules.
 * @param a - the left factor.
 * @param b - the right factor, of a's dtype.
 * @returns a new tensor.
 * @throws RangeError when the shapes cannot be multiplied; TypeError for non-float or mismatched dtypes or a disposed tensor.
 * @example
 * ```ts
 * const y = matmul(randn([5, 3]), randn([3, 2])); // shape [5, 2]
 * ```
 */
export function matmul(a: Tensor, b: Tensor): Tensor {
  return new Tensor(native().matmul(h(a), h(b)));
}

/**
 * {@link matmul} on the libuv thread pool: the event loop keeps running while it computes.
 * @param a - the left factor.
 * @param b - the right factor.
 * @returns a promise of the product.
 * @throws (rejects with) the errors of {@link matmul}.
 * @example
 * ```ts
 * const y = await matmulAsync(randn([1024, 1024]), randn([1024, 1024]));
 * ```
 */
export async function matmulAsync(a: Tensor, b: Tensor): Promise<Tensor> {
  return new Tensor(await native().matmulAsync(h(a), h(b)));
}

/**
 * `a + alpha * b`, broadcasting.
 * @param a - the first term.
 * @param b - the second term.
 * @param alpha - b's multiplier (default 1).
 * @returns a new tensor.
 * @throws RangeError when the shapes cannot be broadcast or alpha is not finite; TypeError for a disposed tensor.
 * @example
 * ```ts
 * add(tensor([1, 2]), tensor([1, 1]), -1).toTypedArray(); // [0, 1]
 * ```
 */
export function add(a: Tensor, b: Tensor, alpha = 1): Tensor {
  return new Tensor(native().add(h(a), h(b), alpha));
}

/**
 * Sum over `dims` (all of them when omitted).
 * @param a - the tensor to reduce.
 * @param dims - the dimension(s) to reduce; negative counts from the end.
 * @param keepdim - keep reduced dimensions with size 1 (default false).
 * @returns a new tensor.
 * @throws RangeError for a dimension out of range or listed twice.
 * @example
 * ```ts
 * sum(tensor([1, 2, 3, 4], [2, 2]), 0, true).shape; // [1, 2]
 * ```
 */
export function sum(a: Tensor, dims?: number | readonly number[], keepdim = false): Tensor {
  return new Tensor(native().sum(h(a), dims, keepdim));
}

/**
 * A copy converted to a dtype, or moved to a device (the same storage when it is there already, as torch's `.to()`).
 * @param a - the tensor.
 * @param dtypeOrDevice - the element type of the copy, or a device: 'cpu', 'cuda', 'cuda:N'.
 * @returns a new tensor.
 * @throws TypeError for a missing or unknown dtype; RangeError for a bad device name; Error for a
 *   CUDA device this process cannot use (see {@link checkDevice}).
 * @example
 * ```ts
 * to(tensor([1.7]), 'int32').toTypedArray(); // Int32Array [1]
 * const g = to(tensor([1.7]), 'cuda:0'); // needs a CUDA libtorch and a GPU
 * ```
 */
export function to(a: Tensor, dtypeOrDevice: Dtype | Device): Tensor {
  if (typeof dtypeOrDevice === 'string' && /^(cpu|cuda)\b/.test(dtypeOrDevice)) {
    return new Tensor(native().toDevice(h(a), checkDevice(dtypeOrDevice, 'to')));
  }
  return new Tensor(native().to(h(a), dtypeOrDevice as Dtype));
}

// ---- Scopes -------------------------------------------------------------------------------------

type Scope = Set<Tensor>;
const syncScopes: Scope[] = [];
let asyncScopes: AsyncLocalStorage<Scope> | undefined; // created on first use: it costs every promise a little

function currentScope(): Scope | undefined {
  // (syncScopes[-1] would be a property lookup by the name "-1", several times slower than an op's overhead)
  return syncScopes.length ? syncScopes[syncScopes.length - 1] : asyncScopes?.getStore();
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
 * @param fn - the work; it must not return a Promise.
 * @returns what fn returns.
 * @throws TypeError when fn returns a Promise; whatever fn throws (the scope's tensors are freed first).
 * @example
 * ```ts
 * const norm = scope(() => {
 *   const x = randn([1000]);
 *   return x.matmul(x); // x is freed, the result kept
 * });
 * ```
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

/**
 * {@link scope} for async functions: tracks tensors created in fn's async context, across awaits.
 * @param fn - the async work.
 * @returns a promise of what fn resolves to.
 * @throws (rejects with) whatever fn throws; the scope's tensors are freed first.
 * @example
 * ```ts
 * const y = await scopeAsync(async () => matmulAsync(randn([64, 64]), randn([64, 64])));
 * ```
 */
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

/**
 * Removes `t` from the current scope so that it outlives it.
 * @param t - a tensor made inside a scope.
 * @returns t.
 * @example
 * ```ts
 * let cache: Tensor | undefined;
 * scope(() => { cache = keep(randn([4])); }); // cache stays alive
 * ```
 */
export function keep<T extends Tensor>(t: T): T {
  currentScope()?.delete(t);
  return t;
}

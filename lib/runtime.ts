// Process-wide native settings and counters.
import { type GpuStats, loadNative, type MemoryStats, native, type RuntimeInfo } from './native.js';

export type { GpuStats, MemoryStats, RuntimeInfo };

/**
 * What the loaded addon was built with and runs on: libtorch and FAISS versions, CUDA, threads.
 * @returns the runtime's description.
 * @throws NativeLoadError when the addon or libtorch cannot be loaded.
 * @example
 * ```ts
 * const { torchVersion, numThreads } = runtimeInfo(); // '2.13.0', 8
 * ```
 */
export function runtimeInfo(): RuntimeInfo {
  return native().info();
}

/**
 * Sets the intra-op threads used by libtorch on every thread that runs our work (also async work).
 * @param n - threads, an integer from 1 to 4096.
 * @throws RangeError for any other n.
 * @example
 * ```ts
 * setNumThreads(4);
 * ```
 */
export function setNumThreads(n: number): void {
  native().setNumThreads(n);
}

/**
 * Live tensors, the caching CPU allocator's counters, and each visible GPU (name, memory,
 * capability, the CUDA caching allocator's bytes); `gpus` is empty on a CPU-only build or machine.
 * @returns the counters now.
 * @example
 * ```ts
 * const before = memoryStats().liveTensors;
 * scope(() => randn([100]));
 * memoryStats().liveTensors === before; // true
 * ```
 */
export function memoryStats(): MemoryStats {
  return native().stats();
}

/**
 * Caps the memory the CPU allocator keeps for reuse after tensors are freed (default: a quarter of
 * RAM, or JFA_CPU_CACHE_MB). Reuse avoids page faults on large tensors; 0 turns caching off.
 * @param bytes - the cap in bytes, a non-negative integer.
 * @throws RangeError for a negative or non-integer value.
 * @example
 * ```ts
 * setCpuCacheLimit(512 * 1024 * 1024); // keep at most 512 MiB for reuse
 * ```
 */
export function setCpuCacheLimit(bytes: number): void {
  native().setCpuCacheLimit(bytes);
}

/**
 * Returns all memory the CPU allocator keeps for reuse to the system, and the free memory of malloc's heaps.
 * @example
 * ```ts
 * emptyCpuCache(); // memoryStats().cpuCachedBytes is now 0
 * ```
 */
export function emptyCpuCache(): void {
  native().emptyCpuCache();
}

/**
 * Where the addon and libtorch were loaded from, and how long loading took.
 * @returns the binary's path and kind ('prebuilt' or 'source build'), libtorch's root, and the load time in ms.
 * @throws NativeLoadError when the addon or libtorch cannot be loaded.
 * @example
 * ```ts
 * const { binaryKind, libtorchRoot } = nativeLocation();
 * ```
 */
export function nativeLocation(): {
  /** the addon binary loaded */
  binaryPath: string;
  /** 'prebuilt' (shipped in the package) or 'source build' */
  binaryKind: string;
  /** the libtorch it runs on */
  libtorchRoot: string;
  /** milliseconds spent loading libtorch and the addon */
  loadMs: number;
} {
  const l = loadNative();
  return { binaryPath: l.binaryPath, binaryKind: l.binaryKind, libtorchRoot: l.libtorch.root, loadMs: l.loadMs };
}

/**
 * Clears every GPU's peak counter ({@link GpuStats.peakAllocatedBytes}); does nothing without CUDA.
 * @example
 * ```ts
 * resetPeakMemory();
 * await train(model, tokenizer, { newTrain: records }, { method: 'sft', device: 'cuda' });
 * const peak = memoryStats().gpus[0]?.peakAllocatedBytes; // the run's most, in bytes
 * ```
 */
export function resetPeakMemory(): void {
  native().resetPeakMemory();
}

/**
 * Returns the CUDA caching allocator's free blocks to the driver; does nothing without CUDA.
 * @example
 * ```ts
 * emptyCudaCache(); // memoryStats().gpus[0].reservedBytes drops to what live tensors hold
 * ```
 */
export function emptyCudaCache(): void {
  native().emptyCudaCache();
}

/**
 * Waits until every GPU operation queued so far by the calling thread is done; does nothing in a
 * CPU-only build or before any CUDA tensor was made. Synchronous ops on CUDA tensors return once
 * their kernels are queued, so time them with a synchronize before reading the clock (async work,
 * e.g. trainStep, already waits before its Promise resolves).
 * @example
 * ```ts
 * const a = randn([4096, 4096], { device: 'cuda' }), b = randn([4096, 4096], { device: 'cuda' });
 * const t = performance.now();
 * const y = matmul(a, b);
 * cudaSynchronize();
 * const ms = performance.now() - t;
 * ```
 */
export function cudaSynchronize(): void {
  native().synchronize();
}

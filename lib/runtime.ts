// Process-wide native settings and counters.
import { loadNative, type MemoryStats, native, type RuntimeInfo } from './native.js';

export type { MemoryStats, RuntimeInfo };

export function runtimeInfo(): RuntimeInfo {
  return native().info();
}

/** Intra-op threads used by libtorch on every thread that runs our work (also async work). */
export function setNumThreads(n: number): void {
  native().setNumThreads(n);
}

/** Live tensors and the caching CPU allocator's counters. */
export function memoryStats(): MemoryStats {
  return native().stats();
}

/**
 * Caps the memory the CPU allocator keeps for reuse after tensors are freed (default: a quarter of
 * RAM, or JFA_CPU_CACHE_MB). Reuse avoids page faults on large tensors; 0 turns caching off.
 */
export function setCpuCacheLimit(bytes: number): void {
  native().setCpuCacheLimit(bytes);
}

/** Returns all memory the CPU allocator keeps for reuse to the system, and the free memory of malloc's heaps. */
export function emptyCpuCache(): void {
  native().emptyCpuCache();
}

/** Where the addon and libtorch were loaded from, and how long loading took. */
export function nativeLocation(): { binaryPath: string; binaryKind: string; libtorchRoot: string; loadMs: number } {
  const l = loadNative();
  return { binaryPath: l.binaryPath, binaryKind: l.binaryKind, libtorchRoot: l.libtorch.root, loadMs: l.loadMs };
}

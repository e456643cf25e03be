// safetensors files, Hugging Face's weight format: loaded memory-mapped (tensors alias the file's
// pages, nothing is copied; writes to them stay private), saved atomically.
import { native } from '../native.js';
import { h, Tensor } from '../tensor.js';

/** What {@link loadSafetensors} returns. */
export interface SafetensorsContents {
  /** Tensor names in the order of the file's data. */
  names: string[];
  /** The tensors by name, aliasing the file's memory-mapped pages. */
  tensors: Record<string, Tensor>;
  /** The header's `__metadata__` strings. */
  metadata: Record<string, string>;
}

/**
 * Reads a .safetensors file, memory-mapped: tensors alias the file's pages, nothing is copied.
 * @param path - the file.
 * @returns the names, tensors and metadata; dispose the tensors when done.
 * @throws Error naming the file and the problem (missing, truncated, bad header, unknown dtype, ...).
 * @example
 * ```ts
 * const { tensors, metadata } = loadSafetensors('model.safetensors');
 * tensors['model.norm.weight']?.shape; // [hidden]
 * ```
 */
export function loadSafetensors(path: string): SafetensorsContents {
  const r = native().loadSafetensors(path);
  const tensors: Record<string, Tensor> = {};
  for (const name of r.names) tensors[name] = new Tensor(r.tensors[name]!);
  return { names: r.names, tensors, metadata: r.metadata };
}

/**
 * Writes tensors (and string metadata) to a .safetensors file: a temporary file, fsync, rename.
 * @param path - the file to write.
 * @param tensors - the tensors by name.
 * @param metadata - strings for the header's `__metadata__` (e.g. `{ format: 'pt' }`).
 * @throws TypeError for a value that is not a Tensor; Error naming the path when it cannot be written.
 * @example
 * ```ts
 * saveSafetensors('out.safetensors', { w: randn([2, 2]) }, { format: 'pt' });
 * ```
 */
export function saveSafetensors(path: string, tensors: Record<string, Tensor>, metadata?: Record<string, string>): void {
  const handles = Object.fromEntries(Object.entries(tensors).map(([k, t]) => [k, t instanceof Tensor ? h(t) : t]));
  native().saveSafetensors(path, handles as never, metadata);
}

// safetensors files, Hugging Face's weight format: loaded memory-mapped (tensors alias the file's
// pages, nothing is copied; writes to them stay private), saved atomically.
import { native } from '../native.js';
import { h, Tensor } from '../tensor.js';

export interface SafetensorsContents {
  /** Tensor names in the order of the file's data. */
  names: string[];
  tensors: Record<string, Tensor>;
  metadata: Record<string, string>;
}

/** Reads a .safetensors file. Errors name the file and the problem (truncated, bad header, unknown dtype, ...). */
export function loadSafetensors(path: string): SafetensorsContents {
  const r = native().loadSafetensors(path);
  const tensors: Record<string, Tensor> = {};
  for (const name of r.names) tensors[name] = new Tensor(r.tensors[name]!);
  return { names: r.names, tensors, metadata: r.metadata };
}

/** Writes tensors (and string metadata) to a .safetensors file: a temporary file, fsync, rename. */
export function saveSafetensors(path: string, tensors: Record<string, Tensor>, metadata?: Record<string, string>): void {
  const handles = Object.fromEntries(Object.entries(tensors).map(([k, t]) => [k, t instanceof Tensor ? h(t) : t]));
  native().saveSafetensors(path, handles as never, metadata);
}

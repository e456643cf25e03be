// Devices by name, checked in JS before anything native runs, so that the errors can name the
// libtorch found on disk ("2.13.0+cpu") and the fix. The addon checks again (core/device.h).
import { z } from 'zod';

import { loadNative, native } from './native.js';

/** A device name: 'cpu', 'cuda' (the first GPU) or 'cuda:N'. */
export type Device = 'cpu' | 'cuda' | `cuda:${number}`;

const DEVICE = /^(cpu|cuda(:(0|[1-9]\d*))?)$/;

/**
 * Checks a device name and that this process can use it.
 * @param device - 'cpu', 'cuda' or 'cuda:N'; undefined means 'cpu'.
 * @param where - names the caller in errors ("loadModel", "jfa train --device").
 * @returns the device, 'cpu' for undefined.
 * @throws TypeError for a non-string; RangeError for another name or a GPU index past the last;
 *   Error when CUDA is asked of a CPU-only libtorch or of a machine without a visible GPU.
 * @example
 * ```ts
 * checkDevice('cpu', 'train'); // 'cpu'
 * checkDevice('cuda', 'train'); // on a CPU-only libtorch: Error "train: device 'cuda': this libtorch (2.13.0+cpu) has no CUDA; ..."
 * ```
 */
export function checkDevice(device: unknown, where: string): Device {
  if (device === undefined) return 'cpu';
  if (typeof device !== 'string') throw new TypeError(`${where}: device must be a string ('cpu', 'cuda' or 'cuda:N'), got ${typeof device}`);
  if (!DEVICE.test(device)) throw new RangeError(`${where}: device '${device}' is not a device; use 'cpu', 'cuda' or 'cuda:N'`);
  if (device === 'cpu') return 'cpu';
  const info = native().info();
  const version = loadNative().libtorch.version;
  if (!info.cuda) {
    throw new Error(
      `${where}: device '${device}': this libtorch (${version}) has no CUDA; install a CUDA torch ` +
        '(e.g. `pip install torch --index-url https://download.pytorch.org/whl/cu130` into .venv, or set LIBTORCH to a CUDA libtorch) ' +
        'and rebuild the addon (`npm run build:native`)',
    );
  }
  if (info.cudaDevices === 0) {
    throw new Error(`${where}: device '${device}': this libtorch (${version}) has CUDA but no GPU is visible (check nvidia-smi, the driver and CUDA_VISIBLE_DEVICES)`);
  }
  const index = device === 'cuda' ? 0 : Number(device.slice(5));
  if (index >= info.cudaDevices) {
    throw new RangeError(`${where}: device '${device}' is out of range: ${info.cudaDevices} GPU${info.cudaDevices === 1 ? '' : 's'} visible`);
  }
  return device as Device;
}

/**
 * Whether a CUDA device can be used here (a CUDA libtorch and at least one visible GPU).
 * @returns true when checkDevice('cuda') would pass.
 * @example
 * ```ts
 * const device = cudaAvailable() ? 'cuda' : 'cpu';
 * ```
 */
export function cudaAvailable(): boolean {
  const info = native().info();
  return info.cuda && info.cudaDevices > 0;
}

/** A --device option's value: 'cpu', 'cuda' or 'cuda:N' (checked against the addon when the model loads). */
export const deviceSchema = z.string().regex(/^(cpu|cuda(:\d+)?)$/, "must be 'cpu', 'cuda' or 'cuda:N'").default('cpu');

// Training methods as presets: a method's name stands for explicit switches, read here once. The
// plan turns them into the run's settings and the native step receives switches, never a name, so
// a new method is one row of this table (and its tests).
import { type LatentMode } from './pool.js';

/** What a training method switches on. */
export interface MethodPreset {
  /** flashback micro-batches join every step, adding alpha x the divergence to the reference */
  flashbacks: boolean;
  /** a pool of latent tasks trains beside the adapter, retrieved per sample */
  latent: boolean;
  /** micro-batch gradients are combined by PCGrad instead of their mean */
  pcgrad: boolean;
  /** old-task training data joins the new-task records */
  replay: boolean;
  /** how the latent pool serves; absent: the latentMode option decides */
  latentMode?: LatentMode;
}

const PRESETS = {
  sft: { flashbacks: false, latent: false, pcgrad: false, replay: false },
  replay: { flashbacks: false, latent: false, pcgrad: false, replay: true },
  flashback: { flashbacks: true, latent: false, pcgrad: false, replay: false },
  jfa: { flashbacks: true, latent: true, pcgrad: true, replay: false },
  'jfa-no-latent': { flashbacks: true, latent: false, pcgrad: true, replay: false },
  'jfa-no-pcgrad': { flashbacks: true, latent: true, pcgrad: false, replay: false },
  'jfa-retrieve': { flashbacks: true, latent: true, pcgrad: true, replay: false, latentMode: 'retrieve' },
  'jfa-drop': { flashbacks: true, latent: true, pcgrad: true, replay: false, latentMode: 'drop' },
} satisfies Record<string, MethodPreset>;

/** A training method: sft, replay, flashback, jfa, or one of jfa's ablations (see {@link METHOD_PRESETS}). */
export type Method = keyof typeof PRESETS;

/** Every method's switches. */
export const METHOD_PRESETS: Readonly<Record<Method, Readonly<MethodPreset>>> = PRESETS;

/** The methods, in the table's order. */
export const METHODS = Object.keys(PRESETS) as readonly Method[];

/**
 * A method's switches, or a RangeError naming the methods there are.
 * @param method - the method's name.
 * @param who - the caller, for the error.
 * @returns its preset.
 * @throws RangeError for a name that is not in the table.
 * @example
 * ```ts
 * presetOf('jfa-no-pcgrad', 'train').pcgrad; // false
 * ```
 */
export function presetOf(method: unknown, who: string): Readonly<MethodPreset> {
  if (typeof method !== 'string' || !Object.hasOwn(PRESETS, method)) throw new RangeError(`${who}: method must be one of ${METHODS.join(', ')}, got ${JSON.stringify(method)}`);
  return METHOD_PRESETS[method as Method];
}

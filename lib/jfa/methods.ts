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
  /**
   * the frozen base's greedy answers to the flashback prompts (made once before training, kept in
   * the run folder) join the new-task records as SFT examples: replay without any old data
   */
  selfReplay: boolean;
  /** how the latent pool serves; absent: the latentMode option decides */
  latentMode?: LatentMode;
  /**
   * EWC: a penalty lambda x sum F * (scale B A)^2 on each adapted layer's weight change, F the
   * diagonal Fisher of its base weight estimated once at the base on the flashback prompts
   */
  ewc?: boolean;
  /** O-LoRA: a penalty lambda x sum ||A A_old^T||_F^2 keeping this round's A orthogonal to the earlier rounds' (continued runs) */
  olora?: boolean;
  /**
   * PACE: each adapter's output is multiplied by (1 + eps), eps ~ N(0, sigma^2), in training, and the
   * loss adds lambda x the squared distance between two perturbed passes' final hidden states
   */
  pace?: boolean;
}

// Each row's type is MethodPreset (whose fields are documented once), its key a method's name.
const row = (p: MethodPreset): Readonly<MethodPreset> => p;

/** Every method's switches: one row per method, the only place a method's name is read. */
export const METHOD_PRESETS = Object.freeze({
  /** plain LoRA fine-tuning on the new tasks */
  sft: row({ flashbacks: false, latent: false, pcgrad: false, replay: false, selfReplay: false }),
  /** SFT on the new tasks mixed with old-task training data (the baseline that needs the old data) */
  replay: row({ flashbacks: false, latent: false, pcgrad: false, replay: true, selfReplay: false }),
  /** SFT plus alpha x the divergence to the reference on flashback prompts */
  flashback: row({ flashbacks: true, latent: false, pcgrad: false, replay: false, selfReplay: false }),
  /**
   * SLM's retrieval (Peng et al. 2024), the paper's baseline: SFT with the latent tasks retrieved per
   * sample and served with the adapter, without flashbacks or PCGrad
   */
  slm: row({ flashbacks: false, latent: true, pcgrad: false, replay: false, selfReplay: false, latentMode: 'retrieve' }),
  /** SFT on the new tasks mixed with the frozen base's own greedy answers to the flashback prompts */
  'self-replay': row({ flashbacks: false, latent: false, pcgrad: false, replay: false, selfReplay: true }),
  /** SFT plus EWC's Fisher-weighted penalty on the adapters' weight change (Kirkpatrick et al. 2017), the Fisher from the flashback prompts */
  ewc: row({ flashbacks: false, latent: false, pcgrad: false, replay: false, selfReplay: false, ewc: true }),
  /** SFT whose adapter is kept orthogonal to the earlier continual rounds' (O-LoRA, Wang et al. 2023); plain SFT in a first round */
  'o-lora': row({ flashbacks: false, latent: false, pcgrad: false, replay: false, selfReplay: false, olora: true }),
  /** PACE (Ni et al. 2024), the paper's baseline: multiplicative noise on the adapters' outputs and a consistency loss between two perturbed passes */
  pace: row({ flashbacks: false, latent: false, pcgrad: false, replay: false, selfReplay: false, pace: true }),
  /** Joint Flashback Adaptation: flashbacks, latent tasks and PCGrad */
  jfa: row({ flashbacks: true, latent: true, pcgrad: true, replay: false, selfReplay: false }),
  /** jfa without latent tasks (the ablation) */
  'jfa-no-latent': row({ flashbacks: true, latent: false, pcgrad: true, replay: false, selfReplay: false }),
  /** jfa with the mean of the micro-batch gradients instead of PCGrad (the ablation) */
  'jfa-no-pcgrad': row({ flashbacks: true, latent: true, pcgrad: false, replay: false, selfReplay: false }),
  /** jfa whose adapter serves with its latent pool, retrieved per prompt */
  'jfa-retrieve': row({ flashbacks: true, latent: true, pcgrad: true, replay: false, selfReplay: false, latentMode: 'retrieve' }),
  /** jfa whose adapter serves alone, trained with latent dropout */
  'jfa-drop': row({ flashbacks: true, latent: true, pcgrad: true, replay: false, selfReplay: false, latentMode: 'drop' }),
});

/** A training method: a row of {@link METHOD_PRESETS}. */
export type Method = keyof typeof METHOD_PRESETS;

/** The methods, in the table's order. */
export const METHODS = Object.keys(METHOD_PRESETS) as readonly Method[];

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
  if (typeof method !== 'string' || !Object.hasOwn(METHOD_PRESETS, method)) throw new RangeError(`${who}: method must be one of ${METHODS.join(', ')}, got ${JSON.stringify(method)}`);
  return METHOD_PRESETS[method as Method];
}

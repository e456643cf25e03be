// PEFT's LoRA adapter format, read and written in this one place: adapter_config.json (PEFT's
// LoraConfig) beside adapter_model.safetensors, whose keys are PEFT's, e.g.
// base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight. PEFT loads what we write, and we
// load what PEFT writes.
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';

import { ModelFormatError } from '../errors.js';
import { type ModelConfig } from '../native.js';
import { type Tensor } from '../tensor.js';
import { readJson, writeFileAtomic } from '../util/files.js';
import { loadSafetensors, saveSafetensors } from './safetensors.js';

/** The linear layers of a Llama block that LoRA can adapt, by their Hugging Face module names (Llama, Qwen2, Qwen3, Mistral, Gemma 2 and 3). */
export const LORA_TARGETS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;
/** Phi-3's linear layers: its checkpoint fuses q/k/v into qkv_proj and gate/up into gate_up_proj, and PEFT adapts those. */
export const FUSED_LORA_TARGETS = ['qkv_proj', 'o_proj', 'gate_up_proj', 'down_proj'] as const;
/** One of {@link LORA_TARGETS} or {@link FUSED_LORA_TARGETS}; a model's own are `model.config.linearModules`. */
export type LoraTarget = (typeof LORA_TARGETS)[number] | (typeof FUSED_LORA_TARGETS)[number];

/** `LlamaModel.addLora`'s rank, alpha and scaling when not given (PEFT's LoraConfig defaults, the paper's r and alpha). */
export const LORA_DEFAULTS = {
  /** the rank */
  r: 8,
  /** PEFT's lora_alpha: the scale is loraAlpha / r */
  loraAlpha: 16,
  /** plain loraAlpha / r scaling, not rsLoRA's loraAlpha / sqrt(r) */
  rslora: false,
} as const;

/** The adapters `LlamaModel.addLora` adds, as PEFT's LoraConfig. */
export interface LoraConfig {
  /** Modules to adapt (default: every linear layer of the model's family, `config.linearModules`, as the paper). */
  targets?: LoraTarget[] | undefined;
  /** Rank (default {@link LORA_DEFAULTS}.r). */
  r?: number | undefined;
  /** PEFT's lora_alpha (default {@link LORA_DEFAULTS}.loraAlpha); the scale is loraAlpha / r. */
  loraAlpha?: number | undefined;
  /** Rank-stabilised scaling loraAlpha / sqrt(r) (default false). */
  rslora?: boolean | undefined;
  /** Seed of the A matrices' initialisation. */
  seed?: number | bigint | undefined;
}

/** An adapter's shape: what adapter_config.json says. */
export type AdapterShape = Required<Omit<LoraConfig, 'seed'>>;

/** The fields of adapter_config.json we read. */
interface AdapterConfigJson {
  peft_type?: string;
  r?: number;
  lora_alpha?: number;
  target_modules?: string[] | string;
  use_rslora?: boolean;
  bias?: string;
  lora_dropout?: number;
}

/** Writes an adapter directory: the factors under PEFT's key names and their adapter_config.json. */
export function writePeftAdapter(dir: string, factors: Record<string, Tensor>, shape: AdapterShape, baseModel: string | null): void {
  mkdirSync(dir, { recursive: true });
  saveSafetensors(join(dir, 'adapter_model.safetensors'), factors, { format: 'pt' });
  const config = {
    peft_type: 'LORA',
    task_type: 'CAUSAL_LM',
    base_model_name_or_path: baseModel,
    r: shape.r,
    lora_alpha: shape.loraAlpha,
    target_modules: shape.targets,
    lora_dropout: 0.0,
    bias: 'none',
    use_rslora: shape.rslora,
    fan_in_fan_out: false,
    init_lora_weights: true,
    modules_to_save: null,
    inference_mode: true,
  };
  writeFileAtomic(join(dir, 'adapter_config.json'), `${JSON.stringify(config, null, 2)}\n`);
}

/**
 * Reads an adapter directory (ours or PEFT's) for a model of `config`: its shape and its factors
 * by PEFT key name, every one checked against the model before the caller changes anything.
 * @returns the shape and the factors; the caller disposes the factors.
 * @throws Error naming the file for a non-LoRA or biased adapter, unsupported target modules, or tensors that do not fit.
 */
export function readPeftAdapter(dir: string, config: ModelConfig): { shape: AdapterShape; factors: Record<string, Tensor> } {
  const configFile = join(dir, 'adapter_config.json');
  const c = readJson<AdapterConfigJson>(configFile);
  if (c.peft_type !== 'LORA') throw new ModelFormatError(`${configFile}: peft_type '${c.peft_type}' is not supported (only 'LORA')`);
  if (c.bias && c.bias !== 'none') throw new ModelFormatError(`${configFile}: bias '${c.bias}' is not supported (only 'none')`);
  const targets = typeof c.target_modules === 'string' ? [c.target_modules] : (c.target_modules ?? []);
  const unknown = targets.filter((t) => !config.linearModules.includes(t));
  if (unknown.length)
    throw new ModelFormatError(`${configFile}: target modules ${unknown.join(', ')} are not supported for model_type '${config.modelType}' (its modules: ${config.linearModules.join(', ')})`);
  if (!Number.isInteger(c.r) || c.r! < 1) throw new ModelFormatError(`${configFile}: r must be a positive integer`);
  const weightsFile = join(dir, 'adapter_model.safetensors');
  if (!existsSync(weightsFile)) throw new ModelFormatError(`${weightsFile}: missing (the adapter folder has no weights)`);
  const weights = loadSafetensors(weightsFile);
  try {
    const expected = loraShapes(config, targets as LoraTarget[], c.r!);
    const extra = weights.names.filter((n) => !expected.has(n));
    if (extra.length) throw new ModelFormatError(`${weightsFile}: adapter tensors this model has no place for: ${extra.slice(0, 3).join(', ')}${extra.length > 3 ? ` (and ${extra.length - 3} more)` : ''}`);
    for (const [name, shape] of expected) {
      const w = weights.tensors[name];
      if (!w) throw new ModelFormatError(`${weightsFile}: no tensor '${name}' (adapter_config.json lists ${targets.join(', ')})`);
      if (w.shape.join() !== shape.join())
        throw new ModelFormatError(
          `${weightsFile}: tensor '${name}' has shape [${w.shape.join(', ')}], this model needs [${shape.join(', ')}] for r=${c.r} (an adapter of another model, or adapter_config.json's r is wrong)`,
        );
    }
  } catch (e) {
    Object.values(weights.tensors).forEach((t) => t.dispose());
    throw e;
  }
  return { shape: { targets: targets as LoraTarget[], r: c.r!, loraAlpha: c.lora_alpha ?? c.r!, rslora: c.use_rslora ?? false }, factors: weights.tensors };
}

/** The shape of every LoRA factor of `targets` at rank r in a model of `config`, by PEFT key name. */
function loraShapes(c: ModelConfig, targets: readonly LoraTarget[], r: number): Map<string, number[]> {
  const q = c.numHeads * c.headDim;
  const kv = c.numKeyValueHeads * c.headDim;
  const io: Record<LoraTarget, [number, number]> = {
    q_proj: [c.hiddenSize, q],
    k_proj: [c.hiddenSize, kv],
    v_proj: [c.hiddenSize, kv],
    o_proj: [q, c.hiddenSize],
    gate_proj: [c.hiddenSize, c.intermediateSize],
    up_proj: [c.hiddenSize, c.intermediateSize],
    down_proj: [c.intermediateSize, c.hiddenSize],
    qkv_proj: [c.hiddenSize, q + 2 * kv],
    gate_up_proj: [c.hiddenSize, 2 * c.intermediateSize],
  };
  const shapes = new Map<string, number[]>();
  for (let l = 0; l < c.numLayers; l++) {
    for (const t of targets) {
      const [inF, outF] = io[t];
      const prefix = `base_model.model.model.layers.${l}.${['gate_proj', 'up_proj', 'gate_up_proj', 'down_proj'].includes(t) ? 'mlp' : 'self_attn'}.${t}`;
      shapes.set(`${prefix}.lora_A.weight`, [r, inF]);
      shapes.set(`${prefix}.lora_B.weight`, [outF, r]);
    }
  }
  return shapes;
}

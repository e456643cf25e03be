// A Llama-family model loaded from a Hugging Face directory (config.json + safetensors), computed
// natively. Adapters added with addLora() can be switched off per call: that is the JFA reference.
// Adapters are saved and loaded in PEFT's layout (adapter_config.json + adapter_model.safetensors).
import { copyFileSync, existsSync, mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';

import { type Dtype, type ModelConfig, native, type NativeForwardOptions, type NativeModel } from '../native.js';
import { h, Tensor } from '../tensor.js';
import { readJson, writeFileAtomic } from '../util/files.js';
import { loadSafetensors, saveSafetensors } from './safetensors.js';

export type { ModelConfig };

export const LORA_TARGETS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;
export type LoraTarget = (typeof LORA_TARGETS)[number];

export interface LoraConfig {
  /** Modules to adapt (default: all seven linear layers, as the paper). */
  targets?: LoraTarget[];
  r?: number;
  loraAlpha?: number;
  rslora?: boolean;
  seed?: number | bigint;
}

export interface ForwardOptions {
  /** (b, t) nonzero at real tokens; omitted: all real. */
  attentionMask?: Tensor;
  /** Apply LoRA adapters (default true); false runs the base model, the JFA reference. */
  adapters?: boolean;
  /** Latent-task increments on the o_proj of layers with a pool (setLatentPool): per sample, k task indices (b, k) and weights (b, k). */
  latent?: { indices: Tensor; weights: Tensor };
}

export interface GenerateOptions {
  /** (b, t) for left-padded prompts; omitted: all real. */
  attentionMask?: Tensor;
  maxNewTokens?: number;
  /** 0 (default): greedy. */
  temperature?: number;
  topP?: number;
  seed?: number | bigint;
  /** Sequences stop at any of these. */
  eosTokenIds?: number[];
  /** Written after a sequence stopped. */
  padTokenId?: number;
  adapters?: boolean;
  /**
   * Latent-task increments per sequence, (b, k) indices and weights, on the o_proj of layers with a
   * pool (setLatentPool): applied to the prompt and to every generated token.
   */
  latent?: { indices: Tensor; weights: Tensor };
}

interface AdapterConfigJson {
  peft_type?: string;
  r?: number;
  lora_alpha?: number;
  target_modules?: string[] | string;
  use_rslora?: boolean;
  bias?: string;
  lora_dropout?: number;
}

/** A forward pass's options as the addon reads them. */
const forwardHandles = (o: ForwardOptions): NativeForwardOptions => ({
  attentionMask: o.attentionMask && h(o.attentionMask),
  adapters: o.adapters ?? true,
  latent: o.latent ? { indices: h(o.latent.indices), weights: h(o.latent.weights) } : undefined,
});

/** Files of a model directory that describe it rather than hold weights: copied by saveMerged(). */
const DESCRIPTION_FILES = ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json'];

/** Loads a Llama-family model from a Hugging Face directory. device: 'cpu' (CUDA builds come later). */
export function loadModel(dir: string, options: { dtype?: Dtype; device?: string } = {}): LlamaModel {
  if (options.device !== undefined && options.device !== 'cpu') throw new RangeError(`loadModel: device '${options.device}' is not supported by this build (only 'cpu')`);
  return LlamaModel.load(dir, { dtype: options.dtype });
}

export class LlamaModel implements Disposable {
  private lora?: Required<Omit<LoraConfig, 'seed'>>;

  private constructor(
    private readonly handle: NativeModel,
    /** The directory it was loaded from, if any. */
    readonly dir?: string,
  ) {}

  /** Loads config.json and model.safetensors (or its shards). dtype: float32 (default) or bfloat16. */
  static load(dir: string, options: { dtype?: Dtype } = {}): LlamaModel {
    return new LlamaModel(native().Model.load(dir, options.dtype ?? 'float32'), resolve(dir));
  }

  /** As load(), reading and converting the weights on the libuv pool. */
  static async loadAsync(dir: string, options: { dtype?: Dtype } = {}): Promise<LlamaModel> {
    return new LlamaModel(await native().Model.loadAsync(dir, options.dtype ?? 'float32'), resolve(dir));
  }

  /** A model with random weights for `config` (Hugging Face LlamaConfig fields). */
  static random(config: Record<string, unknown>, options: { seed?: number | bigint; initStd?: number } = {}): LlamaModel {
    return new LlamaModel(native().Model.random(JSON.stringify({ model_type: 'llama', ...config }), options.seed, options.initStd ?? 0.02));
  }

  get config(): ModelConfig {
    return this.handle.config;
  }
  get dtype(): Dtype {
    return this.handle.dtype;
  }
  get parameterCount(): number {
    return this.handle.parameterCount;
  }

  /** Next-token logits (b, t, vocab) for int64 ids (b, t). */
  logits(ids: Tensor, options: ForwardOptions = {}): Tensor {
    return new Tensor(this.handle.logits(h(ids), forwardHandles(options)));
  }

  /** As logits(), on the libuv pool and without gradients (scoring, evaluation). */
  async logitsAsync(ids: Tensor, options: ForwardOptions = {}): Promise<Tensor> {
    return new Tensor(await this.handle.logitsAsync(h(ids), forwardHandles(options)));
  }

  /** Final hidden states (b, t, hidden), after the last norm. */
  hiddenStates(ids: Tensor, options: ForwardOptions = {}): Tensor {
    return new Tensor(this.handle.hiddenStates(h(ids), forwardHandles(options)));
  }

  /**
   * The LM head on final hidden states (..., hidden) -> logits (..., vocab). With `rows` (n) int64,
   * only those rows of the hidden states flattened to (-1, hidden): (n, vocab).
   */
  head(hidden: Tensor, options: { rows?: Tensor } = {}): Tensor {
    return new Tensor(this.handle.head(h(hidden), options.rows && h(options.rows)));
  }

  /**
   * Attaches a pool of latent-task increments to layer `layer`'s o_proj: A (P, r, in), B (P, out, r).
   * Forward passes given `latent` add sum_j w_bj (x_b A_j^T) B_j^T there; A and B train with the rest.
   */
  setLatentPool(layer: number, A: Tensor, B: Tensor): void {
    this.handle.setLatentPool(layer, h(A), h(B));
  }

  /** Final hidden states averaged over real tokens (b, hidden): the default sample embedding. */
  meanPooled(ids: Tensor, options: ForwardOptions = {}): Tensor {
    return new Tensor(this.handle.meanPooled(h(ids), { attentionMask: options.attentionMask && h(options.attentionMask), adapters: options.adapters ?? true }));
  }

  /** Continues prompts ids (b, t) (left-padded) on the libuv pool, with a KV cache; returns the new tokens (b, n). */
  async generate(ids: Tensor, options: GenerateOptions = {}): Promise<Tensor> {
    const out = await this.handle.generateAsync(h(ids), {
      ...forwardHandles(options),
      maxNewTokens: options.maxNewTokens ?? 32,
      temperature: options.temperature ?? 0,
      topP: options.topP ?? 1,
      seed: options.seed,
      eosTokenIds: options.eosTokenIds ?? [],
      padTokenId: options.padTokenId ?? 0,
    });
    return new Tensor(out);
  }

  /** Adds LoRA adapters (PEFT init: A kaiming-uniform, B zero, so outputs start unchanged). */
  addLora(config: LoraConfig = {}): void {
    if (this.lora) throw new Error('addLora: this model already has adapters');
    const lora = { targets: config.targets ?? [...LORA_TARGETS], r: config.r ?? 8, loraAlpha: config.loraAlpha ?? 16, rslora: config.rslora ?? false };
    this.handle.addLora(lora.targets, { r: lora.r, loraAlpha: lora.loraAlpha, rslora: lora.rslora, seed: config.seed });
    this.lora = lora;
  }

  /** The adapter factors under PEFT's key names; they require gradients. */
  loraParameters(): Record<string, Tensor> {
    return Object.fromEntries(Object.entries(this.handle.loraParameters()).map(([k, t]) => [k, new Tensor(t)]));
  }

  /** Writes the adapters in PEFT's layout: adapter_config.json and adapter_model.safetensors. */
  saveAdapter(dir: string): void {
    if (!this.lora) throw new Error('saveAdapter: this model has no adapters (call addLora or loadAdapter first)');
    mkdirSync(dir, { recursive: true });
    const params = this.loraParameters();
    saveSafetensors(join(dir, 'adapter_model.safetensors'), params, { format: 'pt' });
    Object.values(params).forEach((t) => t.dispose());
    const config = {
      peft_type: 'LORA',
      task_type: 'CAUSAL_LM',
      base_model_name_or_path: this.dir ?? null,
      r: this.lora.r,
      lora_alpha: this.lora.loraAlpha,
      target_modules: this.lora.targets,
      lora_dropout: 0.0,
      bias: 'none',
      use_rslora: this.lora.rslora,
      fan_in_fan_out: false,
      init_lora_weights: true,
      modules_to_save: null,
      inference_mode: true,
    };
    writeFileAtomic(join(dir, 'adapter_config.json'), `${JSON.stringify(config, null, 2)}\n`);
  }

  /** Loads a PEFT LoRA adapter directory (ours or PEFT's) into this model. */
  loadAdapter(dir: string): void {
    const configFile = join(dir, 'adapter_config.json');
    const c = readJson<AdapterConfigJson>(configFile);
    if (c.peft_type !== 'LORA') throw new Error(`${configFile}: peft_type '${c.peft_type}' is not supported (only 'LORA')`);
    if (c.bias && c.bias !== 'none') throw new Error(`${configFile}: bias '${c.bias}' is not supported (only 'none')`);
    const targets = typeof c.target_modules === 'string' ? [c.target_modules] : (c.target_modules ?? []);
    const unknown = targets.filter((t) => !(LORA_TARGETS as readonly string[]).includes(t));
    if (unknown.length) throw new Error(`${configFile}: target modules ${unknown.join(', ')} are not supported`);
    if (!Number.isInteger(c.r) || c.r! < 1) throw new Error(`${configFile}: r must be a positive integer`);
    const weights = loadSafetensors(join(dir, 'adapter_model.safetensors'));
    this.addLora({ targets: targets as LoraTarget[], r: c.r, loraAlpha: c.lora_alpha ?? c.r, rslora: c.use_rslora ?? false });
    const params = this.loraParameters();
    const extra = weights.names.filter((n) => !(n in params));
    if (extra.length) throw new Error(`${dir}: adapter tensors this model has no place for: ${extra.slice(0, 3).join(', ')}`);
    for (const [name, p] of Object.entries(params)) {
      const w = weights.tensors[name];
      if (!w) throw new Error(`${dir}: adapter_model.safetensors has no tensor '${name}'`);
      p.copyFrom(w.dtype === p.dtype ? w : w.to(p.dtype));
    }
    Object.values(weights.tensors).forEach((t) => t.dispose());
    Object.values(params).forEach((t) => t.dispose());
  }

  /** The base weights under Hugging Face's names (new handles to the same tensors). */
  weights(): Record<string, Tensor> {
    return Object.fromEntries(Object.entries(this.handle.weights()).map(([k, t]) => [k, new Tensor(t)]));
  }

  /** Makes the base weights trainable leaves (pretraining) or frozen again. */
  setBaseTrainable(trainable: boolean): void {
    this.handle.setBaseTrainable(trainable);
  }

  /** Folds the adapters into the base weights (W += scale B A) and drops them. */
  mergeLora(): void {
    this.handle.mergeLora();
    this.lora = undefined;
  }

  /**
   * Freezes the adapters beneath the base instead of merging them (continual rounds, `stack` mode):
   * every later forward pass, adapters on or off, adds `scale (x A^T) B^T` of each frozen adapter,
   * so the reference (`adapters: false`) is the model with them. A new adapter can then be added
   * on top. Returns how many adapters are now stacked.
   * @throws Error when the model has no adapters.
   * @example model.loadAdapter('round1/adapter'); model.stackLora(); model.addLora({ r: 8 });
   */
  stackLora(): number {
    const n = this.handle.stackLora();
    this.lora = undefined;
    return n;
  }

  /** How many frozen adapters stackLora() has put beneath the base (0: none). */
  get stackedAdapters(): number {
    return this.handle.stackedAdapters;
  }

  /** Writes the model (weights, and the loaded directory's config and tokenizer files) as a model directory. */
  save(dir: string, extraFiles: Record<string, string> = {}): void {
    if (this.stackedAdapters > 0)
      throw new Error(`save: this model has ${this.stackedAdapters} stacked adapter(s) that model.safetensors cannot hold; save each adapter (saveAdapter) or merge them instead of stacking`);
    mkdirSync(dir, { recursive: true });
    if (this.dir) for (const f of DESCRIPTION_FILES) if (existsSync(join(this.dir, f))) copyFileSync(join(this.dir, f), join(dir, f));
    for (const [name, text] of Object.entries(extraFiles)) writeFileAtomic(join(dir, name), text);
    const weights = this.handle.weights();
    const tensors = Object.fromEntries(Object.entries(weights).map(([k, t]) => [k, new Tensor(t)]));
    saveSafetensors(join(dir, 'model.safetensors'), tensors, { format: 'pt' });
    Object.values(tensors).forEach((t) => t.dispose());
  }

  dispose(): void {
    this.handle.dispose();
  }
  [Symbol.dispose](): void {
    this.dispose();
  }
}

/** The addon's handle of a model: lib/optim hands it to the native training step. */
export function modelHandle(model: LlamaModel): NativeModel {
  return model['handle'];
}

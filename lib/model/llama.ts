// A Llama-family model loaded from a Hugging Face directory (config.json + safetensors), computed
// natively. Adapters added with addLora() can be switched off per call: that is the JFA reference.
// Adapters are saved and loaded in PEFT's layout (model/peft.ts).
import { copyFileSync, existsSync, mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';

import { checkDevice, type Device } from '../device.js';
import { ModelFormatError } from '../errors.js';
import { type Dtype, type ModelConfig, native, type NativeForwardOptions, type NativeModel, NativeLoadError } from '../native.js';
import { h, Tensor } from '../tensor.js';
import { writeFileAtomic } from '../util/files.js';
import { Decoder } from './decoder.js';
import { type GenerateOptions, nativeGenerateOptions } from './generate-options.js';
import { type AdapterShape, LORA_DEFAULTS, type LoraConfig, type LoraTarget, readPeftAdapter, writePeftAdapter } from './peft.js';
import { saveSafetensors } from './safetensors.js';

export type { GenerateOptions, ModelConfig };

/** Options of a forward pass ({@link LlamaModel.logits} and the like). */
export interface ForwardOptions {
  /** (b, t) nonzero at real tokens; omitted: all real. */
  attentionMask?: Tensor;
  /** Apply LoRA adapters (default true); false runs the base model, the JFA reference. */
  adapters?: boolean;
  /** Latent-task increments on the o_proj of layers with a pool (setLatentPool): per sample, k task indices (b, k) and weights (b, k). */
  latent?: {
    /** (b, k) int64 pool entries */
    indices: Tensor;
    /** (b, k) mixture weights */
    weights: Tensor;
  };
}

/** A forward pass's options as the addon reads them. */
const forwardHandles = (o: ForwardOptions): NativeForwardOptions => ({
  attentionMask: o.attentionMask && h(o.attentionMask),
  adapters: o.adapters ?? true,
  latent: o.latent ? { indices: h(o.latent.indices), weights: h(o.latent.weights) } : undefined,
});

/**
 * The native loader's errors about the folder as ModelFormatErrors: a missing or malformed config
 * or weights, whose message names the folder or a file in it. A bad argument (a dtype) and a load
 * failure of the addon itself (NativeLoadError) stay what they are.
 */
function modelFormat<T>(dir: string, load: () => T): T {
  const names = [dir, resolve(dir)];
  const wrap = (e: unknown): never => {
    if (!(e instanceof Error) || e instanceof NativeLoadError || !names.some((n) => e.message.includes(n))) throw e;
    throw new ModelFormatError(e.message, { cause: e });
  };
  try {
    const r = load();
    return (r instanceof Promise ? r.catch(wrap) : r) as T;
  } catch (e) {
    return wrap(e);
  }
}

/** Files of a model directory that describe it rather than hold weights: copied by saveMerged(). */
export const DESCRIPTION_FILES = ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json'];

/**
 * Loads a Llama-family model from a Hugging Face directory (config.json and model.safetensors, or its shards).
 * @param dir - the model directory.
 * @param options - dtype (float32, the default, or bfloat16) and device ('cpu', the default, 'cuda' or 'cuda:N').
 * @returns the model; dispose it when done.
 * @throws RangeError for a bad device name; Error for a CUDA device this process cannot use (see
 *   {@link checkDevice}), or naming the file for a missing or malformed config or weights.
 * @example
 * ```ts
 * using model = loadModel('models/jfa-base');
 * const tokenizer = Tokenizer.fromDir('models/jfa-base');
 * ```
 */
export function loadModel(dir: string, options: { dtype?: Dtype; device?: Device } = {}): LlamaModel {
  return LlamaModel.load(dir, options);
}

/**
 * A Llama-family decoder computed in libtorch, with optional LoRA adapters that can be switched off
 * per call (the JFA reference) and a pool of latent-task increments. Owns native memory.
 *
 * @example
 * ```ts
 * using model = LlamaModel.load('models/jfa-base');
 * model.addLora({ r: 8, loraAlpha: 16, seed: 1 });
 * const logits = model.logits(ids); // (b, t, vocab)
 * model.saveAdapter('out/adapter');
 * ```
 */
export class LlamaModel implements Disposable {
  private lora?: AdapterShape;

  private constructor(
    private readonly handle: NativeModel,
    /** The directory it was loaded from, if any. */
    readonly dir?: string,
  ) {}

  /**
   * Loads config.json and model.safetensors (or its shards).
   * @param dir - the model directory.
   * @param options - dtype: float32 (default) or bfloat16; device: 'cpu' (default), 'cuda' or 'cuda:N'.
   * @returns the model.
   * @throws Error naming the file for a missing or malformed config or weights; the errors of {@link checkDevice}.
   * @example
   * ```ts
   * const model = LlamaModel.load('path/to/hf-model', { dtype: 'bfloat16', device: 'cuda' });
   * ```
   */
  static load(dir: string, options: { dtype?: Dtype; device?: Device } = {}): LlamaModel {
    const device = checkDevice(options.device, 'loadModel');  // before reading gigabytes of weights
    const model = new LlamaModel(modelFormat(dir, () => native().Model.load(dir, options.dtype ?? 'float32')), resolve(dir));
    if (device !== 'cpu') model.toDevice(device);
    return model;
  }

  /** Where the weights live: "cpu", "cuda:0", ... */
  get device(): Device {
    return this.handle.device as Device;
  }

  /**
   * Moves the whole model (weights, adapters, latent pools) to a device, in place. Make optimizers
   * and latent pools after moving: they hold the tensors they were given.
   * @param device - 'cpu', 'cuda' or 'cuda:N'.
   * @returns this model.
   * @throws the errors of {@link checkDevice}.
   * @example
   * ```ts
   * const model = LlamaModel.load('models/jfa-base').toDevice('cuda');
   * ```
   */
  toDevice(device: Device): this {
    this.handle.toDevice(checkDevice(device, 'model.toDevice'));
    return this;
  }

  /**
   * As load(), reading and converting the weights on the libuv pool.
   * @param dir - the model directory.
   * @param options - dtype: float32 (default) or bfloat16; device: 'cpu' (default), 'cuda' or 'cuda:N'.
   * @returns a promise of the model.
   * @throws (rejects with) the errors of load().
   * @example
   * ```ts
   * const model = await LlamaModel.loadAsync('path/to/hf-model');
   * ```
   */
  static async loadAsync(dir: string, options: { dtype?: Dtype; device?: Device } = {}): Promise<LlamaModel> {
    const device = checkDevice(options.device, 'loadModel');
    const model = new LlamaModel(await modelFormat(dir, () => native().Model.loadAsync(dir, options.dtype ?? 'float32')), resolve(dir));
    if (device !== 'cpu') model.toDevice(device);
    return model;
  }

  /**
   * A model with random weights for `config` (Hugging Face LlamaConfig fields).
   * @param config - config.json's fields (hidden_size, num_hidden_layers, ...).
   * @param options - seed and the weights' standard deviation (default 0.02).
   * @returns the model.
   * @throws Error naming the field for a missing or invalid config value.
   * @example
   * ```ts
   * const tiny = LlamaModel.random({ vocab_size: 256, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 2 }, { seed: 1 });
   * ```
   */
  static random(config: Record<string, unknown>, options: { seed?: number | bigint; initStd?: number } = {}): LlamaModel {
    return new LlamaModel(native().Model.random(JSON.stringify({ model_type: 'llama', ...config }), options.seed, options.initStd ?? 0.02));
  }

  /** The model's shape, from config.json. */
  get config(): ModelConfig {
    return this.handle.config;
  }
  /** The weights' element type. */
  get dtype(): Dtype {
    return this.handle.dtype;
  }
  /** Base parameters (adapters not counted). */
  get parameterCount(): number {
    return this.handle.parameterCount;
  }

  /**
   * Next-token logits for every position, with gradients when parameters require them.
   * @param ids - int64 token ids (b, t).
   * @param options - attention mask, adapters on/off, latent increments.
   * @returns logits (b, t, vocab).
   * @throws RangeError/TypeError for ids of another dtype or shape, or a mask that does not fit.
   * @example
   * ```ts
   * const { ids, attentionMask } = tokenizer.batch(['Hello']);
   * const logits = model.logits(ids, { attentionMask, adapters: false }); // the base model's
   * ```
   */
  logits(ids: Tensor, options: ForwardOptions = {}): Tensor {
    return new Tensor(this.handle.logits(h(ids), forwardHandles(options)));
  }

  /**
   * As logits(), on the libuv pool and without gradients (scoring, evaluation).
   * @param ids - int64 token ids (b, t).
   * @param options - attention mask, adapters on/off, latent increments.
   * @returns a promise of logits (b, t, vocab).
   * @throws (rejects with) the errors of logits().
   * @example
   * ```ts
   * const logits = await model.logitsAsync(ids);
   * ```
   */
  async logitsAsync(ids: Tensor, options: ForwardOptions = {}): Promise<Tensor> {
    return new Tensor(await this.handle.logitsAsync(h(ids), forwardHandles(options)));
  }

  /**
   * Final hidden states, after the last norm.
   * @param ids - int64 token ids (b, t).
   * @param options - attention mask, adapters on/off, latent increments.
   * @returns hidden states (b, t, hidden).
   * @throws the errors of logits().
   * @example
   * ```ts
   * const hidden = model.hiddenStates(ids); // then model.head(hidden)
   * ```
   */
  hiddenStates(ids: Tensor, options: ForwardOptions = {}): Tensor {
    return new Tensor(this.handle.hiddenStates(h(ids), forwardHandles(options)));
  }

  /**
   * The LM head on final hidden states (..., hidden) -> logits (..., vocab). With `rows` (n) int64,
   * only those rows of the hidden states flattened to (-1, hidden): (n, vocab).
   * @param hidden - final hidden states (..., hidden).
   * @param options - rows: the flattened rows to score, int64 (n).
   * @returns logits (..., vocab), or (n, vocab) with rows.
   * @throws RangeError for a hidden size that does not fit or a row out of range.
   * @example
   * ```ts
   * const hidden = model.hiddenStates(ids);
   * const last = model.head(hidden, { rows: tensor(new BigInt64Array([3n])) }); // logits of row 3 only
   * ```
   */
  head(hidden: Tensor, options: { rows?: Tensor } = {}): Tensor {
    return new Tensor(this.handle.head(h(hidden), options.rows && h(options.rows)));
  }

  /**
   * Attaches a pool of latent-task increments to layer `layer`'s o_proj: A (P, r, in), B (P, out, r).
   * Forward passes given `latent` add sum_j w_bj (x_b A_j^T) B_j^T there; A and B train with the rest.
   * @param layer - the decoder layer, 0-based.
   * @param A - the pool's down projections (P, r, hidden).
   * @param B - the pool's up projections (P, hidden, r).
   * @throws RangeError for a layer out of range or shapes that do not fit.
   * @example
   * ```ts
   * model.setLatentPool(0, zeros([6, 2, 32]), zeros([6, 32, 2]));
   * ```
   */
  setLatentPool(layer: number, A: Tensor, B: Tensor): void {
    this.handle.setLatentPool(layer, h(A), h(B));
  }

  /**
   * Final hidden states averaged over real tokens: the default sample embedding.
   * @param ids - int64 token ids (b, t).
   * @param options - attention mask and adapters on/off (latent is ignored).
   * @returns embeddings (b, hidden).
   * @throws the errors of logits().
   * @example
   * ```ts
   * const emb = model.meanPooled(ids, { attentionMask, adapters: false });
   * ```
   */
  meanPooled(ids: Tensor, options: ForwardOptions = {}): Tensor {
    return new Tensor(this.handle.meanPooled(h(ids), { attentionMask: options.attentionMask && h(options.attentionMask), adapters: options.adapters ?? true }));
  }

  /**
   * Continues prompts on the libuv pool, with a KV cache.
   * @param ids - left-padded int64 prompt ids (b, t).
   * @param options - length, sampling (temperature, topP, topK, repetitionPenalty, seed), stop tokens, adapters and latent increments.
   * @returns a promise of the new tokens (b, n), padded with padTokenId after a sequence stops.
   * @throws (rejects with) RangeError for a bad option, naming it and its value, or for ids that do not fit.
   * @example
   * ```ts
   * const { ids, attentionMask } = tokenizer.batch(['Q: 2+2?\nA:'], { padding: 'left' });
   * const out = await model.generate(ids, { attentionMask, maxNewTokens: 8, repetitionPenalty: 1.3, eosTokenIds: [tokenizer.eosTokenId!] });
   * tokenizer.decode([...out.toTypedArray()].map(Number));
   * ```
   */
  async generate(ids: Tensor, options: GenerateOptions = {}): Promise<Tensor> {
    return new Tensor(await this.handle.generateAsync(h(ids), nativeGenerateOptions(options, 'generate')));
  }

  /**
   * Starts a generation to step from JS ({@link Decoder}): runs the prompts' prefill on the libuv
   * pool. generateStream and generateText run on one; generate() is one run to its end.
   * @param ids - left-padded int64 prompt ids (b, t).
   * @param options - as {@link LlamaModel.generate}'s.
   * @returns a promise of the decoder; dispose it if you stop before it is done.
   * @throws (rejects with) the errors of generate().
   * @example
   * ```ts
   * using decoder = await model.decoder(ids, { attentionMask, maxNewTokens: 16 });
   * const [first] = await decoder.step(); // row 0's first token
   * ```
   */
  async decoder(ids: Tensor, options: GenerateOptions = {}): Promise<Decoder> {
    return new Decoder(await this.handle.decoderAsync(h(ids), nativeGenerateOptions(options, 'decoder')));
  }

  /**
   * Adds LoRA adapters (PEFT init: A kaiming-uniform, B zero, so outputs start unchanged).
   * @param config - targets, rank, alpha, rsLoRA and seed.
   * @throws Error when the model already has adapters; RangeError for a bad rank.
   * @example
   * ```ts
   * model.addLora({ targets: ['q_proj', 'v_proj'], r: 4, loraAlpha: 8 });
   * ```
   */
  addLora(config: LoraConfig = {}): void {
    if (this.lora) throw new Error('addLora: this model already has adapters');
    const lora = { targets: config.targets ?? ([...this.config.linearModules] as LoraTarget[]), r: config.r ?? LORA_DEFAULTS.r, loraAlpha: config.loraAlpha ?? LORA_DEFAULTS.loraAlpha, rslora: config.rslora ?? LORA_DEFAULTS.rslora };
    this.handle.addLora(lora.targets, { r: lora.r, loraAlpha: lora.loraAlpha, rslora: lora.rslora, seed: config.seed });
    this.lora = lora;
  }

  /**
   * The adapter factors under PEFT's key names; they require gradients.
   * @returns new handles on the adapter tensors, by name; dispose them when done.
   * @example
   * ```ts
   * Object.keys(model.loraParameters())[0]; // 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight'
   * ```
   */
  loraParameters(): Record<string, Tensor> {
    return Object.fromEntries(Object.entries(this.handle.loraParameters()).map(([k, t]) => [k, new Tensor(t)]));
  }

  /**
   * Writes the adapters in PEFT's layout: adapter_config.json and adapter_model.safetensors.
   * @param dir - the adapter directory (created if missing).
   * @throws Error when the model has no adapters, or the files cannot be written.
   * @example
   * ```ts
   * model.saveAdapter('runs/jfa/adapter'); // PeftModel.from_pretrained(base, 'runs/jfa/adapter') loads it
   * ```
   */
  saveAdapter(dir: string): void {
    if (!this.lora) throw new Error('saveAdapter: this model has no adapters (call addLora or loadAdapter first)');
    const params = this.loraParameters();
    try {
      writePeftAdapter(dir, params, this.lora, this.dir ?? null);
    } finally {
      Object.values(params).forEach((t) => t.dispose());
    }
  }

  /**
   * Loads a PEFT LoRA adapter directory (ours or PEFT's) into this model.
   * @param dir - the adapter directory.
   * @throws Error naming the file for a non-LoRA or biased adapter, unsupported target modules, or tensors that do not fit.
   * @example
   * ```ts
   * model.loadAdapter('runs/jfa/adapter');
   * ```
   */
  loadAdapter(dir: string): void {
    const { shape, factors } = readPeftAdapter(dir, this.config);
    try {
      this.addLora(shape);
      const params = this.loraParameters();
      for (const [name, p] of Object.entries(params)) {
        const w = factors[name]!;
        p.copyFrom(w.dtype === p.dtype ? w : w.to(p.dtype));
      }
      Object.values(params).forEach((t) => t.dispose());
    } finally {
      Object.values(factors).forEach((t) => t.dispose());
    }
  }

  /**
   * The base weights under Hugging Face's names (new handles to the same tensors).
   * @returns the weights by name; dispose the handles when done.
   * @example
   * ```ts
   * model.weights()['model.embed_tokens.weight']?.shape; // [vocab, hidden]
   * ```
   */
  weights(): Record<string, Tensor> {
    return Object.fromEntries(Object.entries(this.handle.weights()).map(([k, t]) => [k, new Tensor(t)]));
  }

  /**
   * Makes the base weights trainable leaves (pretraining) or frozen again.
   * @param trainable - true to record their gradients.
   * @example
   * ```ts
   * model.setBaseTrainable(true); // full fine-tuning / pretraining
   * ```
   */
  setBaseTrainable(trainable: boolean): void {
    this.handle.setBaseTrainable(trainable);
  }

  /**
   * Activation checkpointing: forward passes that record gradients keep only each decoder layer's
   * input, and the backward recomputes the layer. Training then holds one layer's activations at a
   * time instead of all of them, for one more forward pass of the layers; the results are the same
   * on the CPU, bit for bit. Off by default; `train({ activationCheckpointing: true })` sets it for
   * a run.
   * @throws TypeError when set to a non-boolean; Error while the model is training or generating.
   * @example
   * ```ts
   * model.activationCheckpointing = true;
   * ```
   */
  get activationCheckpointing(): boolean {
    return this.handle.activationCheckpointing;
  }
  /**
   * Turns activation checkpointing on or off (see the getter).
   * @param on - true to keep only each layer's input in training forward passes.
   * @throws TypeError for a non-boolean; Error while the model is training or generating.
   * @example
   * ```ts
   * model.activationCheckpointing = false;
   * ```
   */
  set activationCheckpointing(on: boolean) {
    this.handle.activationCheckpointing = on;
  }

  /**
   * Folds the adapters into the base weights (W += scale B A) and drops them.
   * @example
   * ```ts
   * model.mergeLora();
   * model.save('merged-model');
   * ```
   */
  mergeLora(): void {
    this.handle.mergeLora();
    this.lora = undefined;
  }

  /**
   * Removes the trainable adapters without folding them into the weights, so the model is its base
   * again (adapters frozen by stackLora() stay) and a new addLora(), loadAdapter() or train() can
   * follow. Tensors taken from loraParameters() earlier stay valid until disposed.
   * @returns whether the model had adapters.
   * @throws Error while the model is training or generating.
   * @example
   * ```ts
   * const newTrain = readJsonl('new-train.jsonl', 'instance');
   * await train(model, tokenizer, { newTrain }, { method: 'sft' });
   * model.saveAdapter('runs/a/adapter');
   * model.removeLora();
   * await train(model, tokenizer, { newTrain }, { method: 'sft', lr: 2e-4 }); // a second run from the base
   * ```
   */
  removeLora(): boolean {
    const had = this.handle.removeLora() > 0;
    this.lora = undefined;
    return had;
  }

  /** Whether the model has trainable adapters (addLora, loadAdapter, or a train() that added them). */
  get hasLora(): boolean {
    return this.lora !== undefined;
  }

  /**
   * Freezes the adapters beneath the base instead of merging them (continual rounds, `stack` mode):
   * every later forward pass, adapters on or off, adds `scale (x A^T) B^T` of each frozen adapter,
   * so the reference (`adapters: false`) is the model with them. A new adapter can then be added
   * on top. Returns how many adapters are now stacked.
   * @throws Error when the model has no adapters.
   * @returns how many adapters are now stacked.
   * @example
   * ```ts
   * model.loadAdapter('round1/adapter');
   * model.stackLora();
   * model.addLora({ r: 8 });
   * ```
   */
  stackLora(): number {
    const n = this.handle.stackLora();
    this.lora = undefined;
    return n;
  }

  /**
   * How many frozen adapters stackLora() has put beneath the base (0: none).
   * @returns the count.
   * @example
   * ```ts
   * model.stackedAdapters; // 1 after one stackLora()
   * ```
   */
  get stackedAdapters(): number {
    return this.handle.stackedAdapters;
  }

  /**
   * Writes the model (weights, and the loaded directory's config and tokenizer files) as a model directory.
   * @param dir - the directory (created if missing).
   * @param extraFiles - more files to write there, name to text (e.g. a model card).
   * @throws Error naming the path when a file cannot be written.
   * @example
   * ```ts
   * model.save('my-model', { 'README.md': '# my model\n' });
   * ```
   */
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

  /**
   * Frees the model's native memory now.
   * @example
   * ```ts
   * model.dispose();
   * ```
   */
  dispose(): void {
    this.handle.dispose();
  }
  /**
   * {@link LlamaModel.dispose}, for `using` declarations.
   * @example
   * ```ts
   * { using model = loadModel('models/jfa-base'); }
   * ```
   */
  [Symbol.dispose](): void {
    this.dispose();
  }
}

/** The addon's handle of a model: lib/optim hands it to the native training step. */
export function modelHandle(model: LlamaModel): NativeModel {
  return model['handle'];
}

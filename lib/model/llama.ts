// A Llama-family model loaded from a Hugging Face directory (config.json + safetensors), computed
// natively. Adapters added with addLora() can be switched off per call: that is the JFA reference.
import { type Dtype, type ModelConfig, native, type NativeModel } from '../native.js';
import { h, Tensor } from '../tensor.js';

export type { ModelConfig };

export type LoraTarget = 'q_proj' | 'k_proj' | 'v_proj' | 'o_proj' | 'gate_proj' | 'up_proj' | 'down_proj';

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
}

export class LlamaModel implements Disposable {
  private constructor(private readonly handle: NativeModel) {}

  /** Loads config.json and model.safetensors (or its shards). dtype: float32 (default) or bfloat16. */
  static load(dir: string, options: { dtype?: Dtype } = {}): LlamaModel {
    return new LlamaModel(native().Model.load(dir, options.dtype ?? 'float32'));
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
    return new Tensor(this.handle.logits(h(ids), options.attentionMask && h(options.attentionMask), options.adapters ?? true));
  }

  /** Final hidden states (b, t, hidden), after the last norm. */
  hiddenStates(ids: Tensor, options: ForwardOptions = {}): Tensor {
    return new Tensor(this.handle.hiddenStates(h(ids), options.attentionMask && h(options.attentionMask), options.adapters ?? true));
  }

  /** Adds LoRA adapters (PEFT init: A kaiming-uniform, B zero, so outputs start unchanged). */
  addLora(config: LoraConfig = {}): void {
    const targets = config.targets ?? ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];
    this.handle.addLora(targets, config.r ?? 8, config.loraAlpha ?? 16, config.rslora ?? false, config.seed);
  }

  /** The adapter factors under PEFT's key names; they require gradients. */
  loraParameters(): Record<string, Tensor> {
    return Object.fromEntries(Object.entries(this.handle.loraParameters()).map(([k, t]) => [k, new Tensor(t)]));
  }

  dispose(): void {
    this.handle.dispose();
  }
  [Symbol.dispose](): void {
    this.dispose();
  }
}

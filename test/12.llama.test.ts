// The Llama decoder against transformers: tiny random models (tied and untied embeddings, grouped
// KV heads, Llama 3 rope scaling, sharded weights) give the same logits and hidden states; LoRA
// adapters start as the base model and switch off; bad model directories are named.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { createModel } from '../lib/model/create.js';
import { LlamaModel } from '../lib/model/llama.js';
import { loadSafetensors } from '../lib/model/safetensors.js';
import { runtimeInfo } from '../lib/runtime.js';
import { tensor } from '../lib/tensor.js';
import { expectError, node, root, venvPython } from './helpers.js';
import { expectClose } from './reference.js';

const dir = mkdtempSync(join(tmpdir(), 'jfa-llama-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const base = {
  vocab_size: 211,
  hidden_size: 64,
  intermediate_size: 96,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  max_position_embeddings: 128,
  rms_norm_eps: 1e-5,
};
const ids = [
  [5, 17, 3, 99, 210, 0, 42, 7],
  [1, 2, 3, 4, 5, 0, 0, 0],
];
const mask = [
  [1, 1, 1, 1, 1, 1, 1, 1],
  [1, 1, 1, 1, 1, 0, 0, 0], // right padding
];
const variants = {
  untied: { config: { ...base, tie_word_embeddings: false }, seed: 1 },
  tied_llama3: {
    config: {
      ...base,
      tie_word_embeddings: true,
      rope_theta: 500000,
      rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 16 },
    },
    seed: 2,
  },
  sharded_mha: { config: { ...base, num_key_value_heads: 4, tie_word_embeddings: false }, seed: 3, shard: true },
};

beforeAll(() => {
  for (const [name, spec] of Object.entries(variants)) {
    const r = spawnSync(venvPython, [join(root, 'scripts', 'reference', 'tiny_llama.py'), join(dir, name), JSON.stringify({ ...spec, ids, mask })], {
      encoding: 'utf8',
      timeout: 300_000,
    });
    if (r.status !== 0) throw new Error(`tiny_llama.py failed: ${r.stderr}`);
  }
});

const idsTensor = () => tensor(BigInt64Array.from(ids.flat().map(BigInt)), [2, 8]);
const maskTensor = () => tensor(Uint8Array.from(mask.flat()), [2, 8]);

/** Keeps the positions the mask marks real: padded positions are not compared. */
function realRows(values: Float32Array, width: number): Float32Array {
  const flat = mask.flat();
  return Float32Array.from(flat.flatMap((m, i) => (m ? Array.from(values.subarray(i * width, (i + 1) * width)) : [])));
}

describe('Llama decoder matches transformers', () => {
  for (const name of Object.keys(variants)) {
    it(`${name}: logits and final hidden states (fp32)`, () => {
      const model = LlamaModel.load(join(dir, name));
      const ref = loadSafetensors(join(dir, name, 'reference.safetensors')).tensors;
      const logits = model.logits(idsTensor(), { attentionMask: maskTensor() });
      expect(logits.shape).toEqual([2, 8, base.vocab_size]);
      const ours = realRows(logits.toTypedArray() as Float32Array, base.vocab_size);
      const theirs = realRows(ref.logits!.toTypedArray() as Float32Array, base.vocab_size);
      expectClose(tensor(ours), { shape: [ours.length], data: theirs }, 1e-5, 'logits');
      const hidden = realRows(model.hiddenStates(idsTensor(), { attentionMask: maskTensor() }).toTypedArray() as Float32Array, base.hidden_size);
      expectClose(tensor(hidden), { shape: [hidden.length], data: realRows(ref.hidden!.toTypedArray() as Float32Array, base.hidden_size) }, 1e-5, 'hidden');
      model.dispose();
    });
  }

  it('the CPU products take oneDNN on AMD processors with AVX-512, MKL elsewhere; JFA_CPU_GEMM chooses; both give these logits', () => {
    const cpu = readFileSync('/proc/cpuinfo', 'utf8');
    const amd512 = /vendor_id\s*:\s*AuthenticAMD/.test(cpu) && /\bavx512f\b/.test(cpu);
    if (!process.env.JFA_CPU_GEMM) expect(runtimeInfo().cpuGemm).toBe(amd512 ? 'onednn' : 'mkl');
    const code = `import { LlamaModel, tensor, runtimeInfo } from './dist/index.js';
      const m = LlamaModel.load(${JSON.stringify(join(dir, 'untied'))});
      const ids = tensor(BigInt64Array.from(${JSON.stringify(ids.flat())}.map(BigInt)), [2, 8]);
      console.log(JSON.stringify({ gemm: runtimeInfo().cpuGemm, logits: Array.from(m.logits(ids).toTypedArray()) }));`;
    const runs = Object.fromEntries((['mkl', 'onednn'] as const).map((g) => {
      const r = node(code, { JFA_CPU_GEMM: g });
      expect(r.status, r.stderr).toBe(0);
      return [g, JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { gemm: string; logits: number[] }];
    }));
    expect(runs.mkl!.gemm).toBe('mkl');
    expect(runs.onednn!.gemm).toBe('onednn');
    expectClose(tensor(Float32Array.from(runs.onednn!.logits)), { shape: [runs.mkl!.logits.length], data: Float32Array.from(runs.mkl!.logits) }, 1e-5, 'oneDNN against MKL');
  });

  it('bf16 weights give logits within bf16 precision', () => {
    const model = LlamaModel.load(join(dir, 'untied'), { dtype: 'bfloat16' });
    expect(model.dtype).toBe('bfloat16');
    const ref = loadSafetensors(join(dir, 'untied', 'reference.safetensors')).tensors;
    const logits = model.logits(idsTensor(), { attentionMask: maskTensor() }).to('float32');
    const ours = realRows(logits.toTypedArray() as Float32Array, base.vocab_size);
    expectClose(tensor(ours), { shape: [ours.length], data: realRows(ref.logits!.toTypedArray() as Float32Array, base.vocab_size) }, 5e-2, 'bf16 logits');
  });

  it('LoRA adapters start as the base model, receive gradients, and switch off for the reference', () => {
    const model = LlamaModel.load(join(dir, 'untied'));
    const before = model.logits(idsTensor()).toTypedArray() as Float32Array;
    model.addLora({ r: 4, loraAlpha: 8, seed: 1 });
    const params = model.loraParameters();
    expect(Object.keys(params)).toHaveLength(2 * 7 * 2);
    expect(params['base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight']!.shape).toEqual([4, 64]);
    expect(params['base_model.model.model.layers.1.mlp.down_proj.lora_B.weight']!.shape).toEqual([64, 4]);
    expect(model.logits(idsTensor()).toTypedArray()).toEqual(before); // B = 0: no change yet
    model.logits(idsTensor()).sum().backward();
    const absMax = (t: { toTypedArray(): unknown }) => Math.max(...Array.from(t.toTypedArray() as Float32Array, Math.abs));
    // With B = 0 the gradient reaches B only; A's is exactly zero (as in PEFT).
    expect(absMax(params['base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight']!.grad!)).toBeGreaterThan(0);
    expect(absMax(params['base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight']!.grad!)).toBe(0);
    expect(model.logits(idsTensor(), { adapters: false }).toTypedArray()).toEqual(before);
  });
});

describe('a random model depends only on its config and seed', () => {
  // The digest of createModel's weights for this config and seed since the first release: the
  // draws follow the checkpoint's module order (q, k, v, o, gate, up, down), so a base rebuilt from
  // its card's command (jfa pretrain --seed ...) starts from the same weights on every version.
  // A change of the order, the init or the file layout changes it.
  it('createModel writes the same bytes for the same config and seed as before the families were added', async () => {
    const d = mkdtempSync(join(tmpdir(), 'jfa-init-'));
    try {
      await createModel(d, { hiddenSize: 32, intermediateSize: 64, numLayers: 2, numHeads: 2, seed: 1 });
      expect(createHash('sha256').update(readFileSync(join(d, 'model.safetensors'))).digest('hex')).toBe('d3b0d20d76012daa94dd22a69a6e30779ebe4fca64cc77cc5dac46e88b0a5f56');
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });
});

describe('bad model directories are named', () => {
  const copy = (name: string) => {
    const d = join(dir, `bad-${name}`);
    mkdirSync(d, { recursive: true });
    copyFileSync(join(dir, 'untied', 'config.json'), join(d, 'config.json'));
    copyFileSync(join(dir, 'untied', 'model.safetensors'), join(d, 'model.safetensors'));
    return d;
  };

  it('missing config, unsupported model_type or rope scaling, missing weights', () => {
    expectError(() => LlamaModel.load(join(dir, 'nowhere')), RangeError, 'nowhere: not a directory');
    const noConfig = copy('noconfig');
    rmSync(join(noConfig, 'config.json'));
    expectError(() => LlamaModel.load(noConfig), RangeError, 'config.json: missing (not a Hugging Face model directory)');
    const falcon = copy('falcon');
    const config = JSON.parse(readFileSync(join(falcon, 'config.json'), 'utf8'));
    writeFileSync(join(falcon, 'config.json'), JSON.stringify({ ...config, model_type: 'falcon' }));
    expectError(() => LlamaModel.load(falcon), RangeError, "config.json: model_type 'falcon' is not supported (supported: gemma2, gemma3_text, llama, mistral, phi3, qwen2, qwen3)");
    writeFileSync(join(falcon, 'config.json'), JSON.stringify({ ...config, model_type: 'mistral' }));
    expectError(() => LlamaModel.load(falcon), RangeError, "architecture 'LlamaForCausalLM' is not supported for model_type 'mistral' (only MistralForCausalLM)");
    const yarn = copy('yarn');
    writeFileSync(join(yarn, 'config.json'), JSON.stringify({ ...config, rope_parameters: { rope_type: 'yarn', factor: 4, rope_theta: 10000 } }));
    expectError(() => LlamaModel.load(yarn), RangeError, "rope_scaling of type 'yarn' is not supported");
    const noWeights = copy('noweights');
    rmSync(join(noWeights, 'model.safetensors'));
    expectError(() => LlamaModel.load(noWeights), RangeError, 'no model.safetensors or model.safetensors.index.json');
  });

  it('config.json and the shard index are strict JSON, named with the position; a repeated key keeps its last value', () => {
    const d = copy('strict');
    const config = JSON.stringify(JSON.parse(readFileSync(join(d, 'config.json'), 'utf8')));
    const bad = (value: string, ...parts: string[]) => {
      writeFileSync(join(d, 'config.json'), `{"extra": ${value}, ${config.slice(1)}`);
      expectError(() => LlamaModel.load(d), RangeError, 'config.json is not valid JSON (', ...parts);
    };
    bad('+1', 'line 1, column 11, byte 10: syntax error while parsing value - invalid literal');
    bad('01', 'byte 11: syntax error while parsing object - unexpected number literal');
    bad('.5', 'byte 10: syntax error while parsing value - invalid literal');
    bad('"a\tb"', 'byte 12: syntax error while parsing value - invalid string: control character U+0009 (HT) must be escaped');
    bad('"\\ud800"', 'surrogate U+D800..U+DBFF must be followed by U+DC00..U+DFFF');
    bad('1e5000', "number overflow parsing '1e5000': beyond the range of a double");
    const lines = `{\n  "extra": 1,\n  "more": +1\n}`;
    writeFileSync(join(d, 'config.json'), lines);
    expectError(() => LlamaModel.load(d), RangeError, 'config.json is not valid JSON (line 3, column 11, byte 26:');

    // JSON.parse takes the last of two equal keys; so do we.
    const last97 = `${config.slice(0, -1)}, "intermediate_size": 97}`;
    expect((JSON.parse(last97) as { intermediate_size: number }).intermediate_size).toBe(97);
    writeFileSync(join(d, 'config.json'), last97);
    expectError(() => LlamaModel.load(d), RangeError, "tensor 'model.layers.0.mlp.gate_proj.weight' has shape [96, 64], expected [97, 64]");
    const last96 = `{"intermediate_size": 97, ${config.slice(1)}`;
    expect((JSON.parse(last96) as { intermediate_size: number }).intermediate_size).toBe(96);
    writeFileSync(join(d, 'config.json'), last96);
    LlamaModel.load(d).dispose();

    writeFileSync(join(d, 'config.json'), config);
    rmSync(join(d, 'model.safetensors'));
    writeFileSync(join(d, 'model.safetensors.index.json'), '{"weight_map": {"a": +1}}');
    expectError(() => LlamaModel.load(d), RangeError, 'model.safetensors.index.json is not valid JSON (line 1, column 22, byte 21: syntax error');
  });

  it('a tensor missing or misshapen, a corrupt header', () => {
    const wrong = copy('wrongshape');
    const config = JSON.parse(readFileSync(join(wrong, 'config.json'), 'utf8'));
    writeFileSync(join(wrong, 'config.json'), JSON.stringify({ ...config, intermediate_size: 97 }));
    expectError(() => LlamaModel.load(wrong), RangeError, "model.safetensors: tensor 'model.layers.0.mlp.gate_proj.weight' has shape [96, 64], expected [97, 64]");
    const deeper = copy('deeper');
    writeFileSync(join(deeper, 'config.json'), JSON.stringify({ ...config, num_hidden_layers: 3 }));
    expectError(() => LlamaModel.load(deeper), RangeError, "missing tensor 'model.layers.2.input_layernorm.weight'");
    const corrupt = copy('corrupt');
    const bytes = readFileSync(join(corrupt, 'model.safetensors'));
    bytes.write('X', 8); // the header's opening brace
    writeFileSync(join(corrupt, 'model.safetensors'), bytes);
    expectError(() => LlamaModel.load(corrupt), RangeError, 'model.safetensors: header is not valid JSON');
  });
});

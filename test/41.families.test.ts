// The Llama-like families against transformers + PEFT: tiny random Qwen2 (q/k/v biases), Qwen3 (q/k
// norm, head_dim apart from hidden/heads, a windowed second layer), Mistral (sliding window shorter
// than the sequences), Phi-3 (fused qkv_proj and gate_up_proj, a window), Gemma 2 (attention and
// final logit soft-caps, sandwich norms, local and global layers; transformers' eager attention as
// the reference, since its SDPA skips the cap) and Gemma 3 (scaled
// embeddings, 1 + w norms in a sandwich, q/k norm, GeGLU, its own score scale, a local layer with its
// own rotary base and a global one with linear rope scaling) made by transformers
// (scripts/reference/tiny_families.py). Per family: logits on right- and left-padded batches, 32
// greedy tokens with and without a PEFT adapter, the adapter's logits, one training step (loss,
// every LoRA gradient, the AdamW update), bf16 logits; and the same weights without the family's
// detail give logits far outside the tolerance, so the test sees a skipped detail. What we do not
// implement (Gemma 1, multimodal Gemma 3, longrope, partial rotary, mixed Mistral layers) is refused
// by name.
// JFA_TEST_DEVICE=cuda (the GPU check, scripts/device/check.sh) runs our side on the GPU against the
// same transformers references, computed on the CPU.
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { tokenCrossEntropy } from '../lib/kernels.js';
import { createModel } from '../lib/model/create.js';
import { LlamaModel } from '../lib/model/llama.js';
import { loadSafetensors } from '../lib/model/safetensors.js';
import { Tokenizer } from '../lib/model/tokenizer.js';
import { AdamW } from '../lib/optim.js';
import { type Tensor, tensor } from '../lib/tensor.js';
import { FAMILY_MODELS, FAMILY_VOCAB, testDevice } from './families.js';
import { expectError, relDiff, root, venvPython } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'jfa-families-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const V = FAMILY_VOCAB;
const ALL = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];
// The models (test/families.ts), the adapter targets of each and the detail its ablation drops.
const families = {
  qwen2: { ...FAMILY_MODELS.qwen2, targets: ALL, ablation: 'no_bias' },
  qwen3: {
    ...FAMILY_MODELS.qwen3,
    targets: ['q_proj', 'v_proj', 'down_proj'],
    ablation: 'no_qk_norm', // a Llama with these weights, on the first 5 positions (before the window hides a key)
    ablation_len: 5,
  },
  mistral: { ...FAMILY_MODELS.mistral, targets: ALL, ablation: 'no_window' },
  phi3: { ...FAMILY_MODELS.phi3, targets: ['qkv_proj', 'o_proj', 'gate_up_proj', 'down_proj'], ablation: 'no_window' },
  // neither soft-cap; greedy tokens cannot see the head's cap (tanh keeps the order), tokens under a
  // repetition penalty do
  gemma2: { ...FAMILY_MODELS.gemma2, targets: ALL, ablation: 'no_softcap', penalty: 1.3 },
  gemma3: { ...FAMILY_MODELS.gemma3, targets: ALL, ablation: 'no_norm_offset' }, // its norms as Llama's (w, not 1 + w)
} as const;
type Family = keyof typeof families;
const device = testDevice();
const load = (d: string, o: { dtype?: 'bfloat16' } = {}) => LlamaModel.load(d, { ...o, device });

// Eight tokens: past every window above. Right padding for scoring and training, left for generation.
const idsRight = [
  [5, 17, 3, 99, 210, 0, 42, 7],
  [1, 2, 3, 4, 5, 0, 0, 0],
];
const maskRight = [
  [1, 1, 1, 1, 1, 1, 1, 1],
  [1, 1, 1, 1, 1, 0, 0, 0],
];
const idsLeft = [
  [5, 17, 3, 99, 210, 0, 42, 7],
  [0, 0, 0, 1, 2, 3, 4, 5],
];
const maskLeft = [
  [1, 1, 1, 1, 1, 1, 1, 1],
  [0, 0, 0, 1, 1, 1, 1, 1],
];
const NEW_TOKENS = 32;
const R = 4;
const ALPHA = 8;
const LR = 5e-3;
const WEIGHT_DECAY = 0.01;
// AdamW's eps: 1e-6 rather than torch's 1e-8. Adam's first step moves each weight by about
// lr * g / (|g| + eps): for a gradient element near zero (Qwen2's has one of 8e-10, where fp32's
// summation order alone changes it by 25%) that ratio is ill-conditioned whoever computes it. The
// gradients themselves are compared before the step; with eps 1e-6 the step compares every
// element that a gradient well above fp32's noise moves.
const EPS = 1e-6;
const LOGITS_TOL = 1e-4; // absolute, fp32
// test/20's tolerances for a training step: relative, losses and weights
const LOSS_RTOL = 2e-5;
const STEP_RTOL = 1e-6; // one AdamW step, beyond what the gradients' own differences explain

// Inputs on our side's device; results read back on the CPU.
const onDevice = (t: Tensor) => (device === 'cpu' ? t : t.to(device));
const ids = (rows: number[][]) => onDevice(tensor(BigInt64Array.from(rows.flat().map(BigInt)), [rows.length, rows[0]!.length]));
const maskOf = (rows: number[][]) => onDevice(tensor(Uint8Array.from(rows.flat()), [rows.length, rows[0]!.length]));
const host = (t: Tensor) => (t.device === 'cpu' ? t : t.to('cpu'));
const floats = (t: Tensor) => host(t.dtype === 'float32' ? t : t.to('float32')).toTypedArray() as Float32Array;
const tokens = (t: Tensor) => Array.from(host(t).toTypedArray() as BigInt64Array, Number);

/** max |a - b| over the positions `mask` marks real (padding rows are not compared). */
function realDiff(a: Float32Array, b: Float32Array, mask: number[][], width: number): number {
  let d = 0;
  mask.flat().forEach((m, i) => {
    if (!m) return;
    for (let j = i * width; j < (i + 1) * width; j++) d = Math.max(d, Math.abs(a[j]! - b[j]!));
  });
  return d;
}

function py(args: string[]): string {
  const r = spawnSync(venvPython, [join(root, 'scripts', 'reference', 'tiny_families.py'), ...args], { encoding: 'utf8', timeout: 300_000 });
  if (r.status !== 0) throw new Error(`tiny_families.py failed: ${r.stderr}`);
  return r.stdout.trim().split('\n').pop()!;
}

const refs = {} as Record<Family, Record<string, Tensor>>;
const modelDir = (f: Family) => join(dir, f);

beforeAll(() => {
  const tok = join(dir, 'tokenizer');
  createModel(tok, { hiddenSize: 16, intermediateSize: 32, numLayers: 1, numHeads: 2, seed: 1 });
  py([dir, JSON.stringify({ families, ids_right: idsRight, mask_right: maskRight, ids_left: idsLeft, mask_left: maskLeft, new_tokens: NEW_TOKENS, r: R, alpha: ALPHA, lr: LR, weight_decay: WEIGHT_DECAY, eps: EPS })]);
  for (const f of Object.keys(families) as Family[]) {
    for (const file of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(tok, file), join(modelDir(f), file));
    refs[f] = loadSafetensors(join(modelDir(f), 'reference.safetensors')).tensors as Record<string, Tensor>;
  }
});

describe.each(Object.keys(families) as Family[])('%s matches transformers', (f) => {
  it('logits on right- and left-padded batches (fp32), and the same weights without the family detail are far off', () => {
    using model = load(modelDir(f));
    expect(model.config.modelType).toBe(families[f].model_type);
    expect(Tokenizer.fromDir(modelDir(f)).encode('ab').length).toBeGreaterThan(0);
    const right = floats(model.logits(ids(idsRight), { attentionMask: maskOf(maskRight) }));
    const left = floats(model.logits(ids(idsLeft), { attentionMask: maskOf(maskLeft) }));
    expect(realDiff(right, floats(refs[f].logits_right!), maskRight, V)).toBeLessThan(LOGITS_TOL);
    expect(realDiff(left, floats(refs[f].logits_left!), maskLeft, V)).toBeLessThan(LOGITS_TOL);
    // a model that skipped the detail (biases, q/k norm, the window) would be this far from transformers
    const n = (families[f] as { ablation_len?: number }).ablation_len ?? idsRight[0]!.length;
    const prefix = (x: Float32Array) => Float32Array.from(idsRight.flatMap((_, b) => Array.from(x.subarray(b * 8 * V, (b * 8 + n) * V))));
    expect(realDiff(prefix(right), floats(refs[f].logits_ablation!), maskRight.map((m) => m.slice(0, n)), V)).toBeGreaterThan(100 * LOGITS_TOL);
  });

  it(`${NEW_TOKENS} greedy tokens equal transformers generate, base and with the PEFT adapter`, async () => {
    using model = load(modelDir(f));
    const base = await model.generate(ids(idsLeft), { attentionMask: maskOf(maskLeft), maxNewTokens: NEW_TOKENS });
    expect(tokens(base)).toEqual(tokens(refs[f].tokens!));
    const penalty = (families[f] as { penalty?: number }).penalty;
    if (penalty) {
      const penalised = await model.generate(ids(idsLeft), { attentionMask: maskOf(maskLeft), maxNewTokens: NEW_TOKENS, repetitionPenalty: penalty });
      expect(tokens(penalised)).toEqual(tokens(refs[f].tokens_penalty!));
      expect(tokens(penalised)).not.toEqual(tokens(base)); // the penalty changed the tokens
    }
    model.loadAdapter(join(modelDir(f), 'adapter'));
    const adapted = await model.generate(ids(idsLeft), { attentionMask: maskOf(maskLeft), maxNewTokens: NEW_TOKENS });
    expect(tokens(adapted)).toEqual(tokens(refs[f].tokens_adapter!));
  });

  it("a PEFT adapter (nonzero B) loads with PEFT's logits", () => {
    using model = load(modelDir(f));
    model.loadAdapter(join(modelDir(f), 'adapter'));
    const left = floats(model.logits(ids(idsLeft), { attentionMask: maskOf(maskLeft) }));
    expect(realDiff(left, floats(refs[f].logits_adapter!), maskLeft, V)).toBeLessThan(LOGITS_TOL);
    expect(realDiff(left, floats(refs[f].logits_left!), maskLeft, V)).toBeGreaterThan(100 * LOGITS_TOL); // the adapter matters
    model.saveAdapter(join(dir, `ours-${f}`));
  });

  it('one training step: loss, every LoRA gradient and the AdamW update equal transformers + PEFT', () => {
    using model = load(modelDir(f));
    model.loadAdapter(join(modelDir(f), 'adapter'));
    const params = model.loraParameters();
    const names = Object.keys(params);
    expect(names.length).toBe(2 * 2 * families[f].targets.length);
    const optimizer = new AdamW(Object.values(params), { lr: LR, weightDecay: WEIGHT_DECAY, eps: EPS });
    const targets = idsRight.map((row, b) => [...row.slice(1).map((t, i) => (maskRight[b]![i + 1] ? t : -100)), -100]);
    const loss = tokenCrossEntropy(model.logits(ids(idsRight), { attentionMask: maskOf(maskRight) }), ids(targets));
    const ref = refs[f];
    const ours = floats(loss)[0]!;
    const theirs = floats(ref.loss!)[0]!;
    expect(Math.abs(ours - theirs)).toBeLessThanOrEqual(LOSS_RTOL * Math.abs(theirs) + 1e-7);
    loss.backward();
    for (const name of names) {
      expect(ref[`grad.${name}`], name).toBeDefined();
      expect(relDiff(floats(params[name]!.grad!), floats(ref[`grad.${name}`]!)), `grad ${name}`).toBeLessThanOrEqual(1e-4);
    }
    optimizer.step();
    // AdamW's first step moves each weight by lr * g / (|g| + eps) (the bias corrections cancel), so a
    // gradient element near eps carries its float32 rounding (the gradients agree within 1e-4 above)
    // into the update, magnified up to 1 / eps. Each weight is held to what its own two gradients
    // explain, plus STEP_RTOL of float32 rounding. Measured on qwen3: the plain difference 1.8e-5 with
    // MKL's products and 2.7e-5 with oneDNN's; with each gradient's share taken out, 1.2e-7 at most
    // in every family on either road.
    const unit = (g: number) => g / (Math.abs(g) + EPS);
    for (const name of names) {
      const w = floats(params[name]!), r = floats(ref[`step.${name}`]!), go = floats(params[name]!.grad!), gr = floats(ref[`grad.${name}`]!);
      let excess = 0, scale = 1e-12;
      for (let i = 0; i < r.length; i++) {
        excess = Math.max(excess, Math.abs(w[i]! - r[i]!) - LR * Math.abs(unit(go[i]!) - unit(gr[i]!)));
        scale = Math.max(scale, Math.abs(r[i]!));
      }
      expect(excess / scale, `step ${name}`).toBeLessThanOrEqual(STEP_RTOL);
    }
    optimizer.dispose();
  });

  it('bf16 weights give logits within bf16 precision', () => {
    using model = load(modelDir(f), { dtype: 'bfloat16' });
    const right = floats(model.logits(ids(idsRight), { attentionMask: maskOf(maskRight) }));
    // bf16's distance from fp32 grows with the model's gain: Gemma 2's weights (std 0.2, to reach its
    // soft-caps) put transformers' own bf16 logits 0.15 from its fp32 ones, where the others' stay under 5e-3
    const theirs = realDiff(floats(refs[f].logits_right_bf16!), floats(refs[f].logits_right!), maskRight, V);
    expect(realDiff(right, floats(refs[f].logits_right!), maskRight, V)).toBeLessThan(Math.max(5e-2, 2 * theirs));
  });
});

describe('in Hugging Face layout both ways', () => {
  it('PEFT loads the adapters we saved, and transformers the models we saved (Phi-3 fused again), with our logits', () => {
    const runs: Record<string, unknown> = {};
    const ours: Record<string, Float32Array> = {};
    for (const f of Object.keys(families) as Family[]) {
      using model = load(modelDir(f));
      model.loadAdapter(join(dir, `ours-${f}`));
      ours[`adapter.${f}`] = floats(model.logits(ids(idsLeft), { attentionMask: maskOf(maskLeft) }));
      runs[`adapter.${f}`] = { model: modelDir(f), adapter: join(dir, `ours-${f}`), ids: idsLeft, mask: maskLeft };
      model.mergeLora();
      model.save(join(dir, `merged-${f}`));
      ours[`merged.${f}`] = floats(model.logits(ids(idsLeft), { attentionMask: maskOf(maskLeft) }));
      runs[`merged.${f}`] = { model: join(dir, `merged-${f}`), ids: idsLeft, mask: maskLeft };
    }
    const saved = Object.keys(loadSafetensors(join(dir, 'merged-phi3', 'model.safetensors')).tensors);
    expect(saved).toContain('model.layers.0.self_attn.qkv_proj.weight');
    expect(saved).toContain('model.layers.0.mlp.gate_up_proj.weight');
    expect(saved.some((n) => n.includes('q_proj') || n.includes('gate_proj.'))).toBe(false);
    const out = join(dir, 'ours-in-hf.safetensors');
    py(['logits', JSON.stringify({ runs, out })]);
    const ref = loadSafetensors(out).tensors;
    for (const [key, logits] of Object.entries(ours)) expect(realDiff(logits, floats(ref[key]!), maskLeft, V), key).toBeLessThan(LOGITS_TOL);
  });
});

describe("each family's chat template renders as transformers renders it", () => {
  // Each family's chat format (ChatML for Qwen2.5, [INST] for Mistral-Instruct, <|role|> for Phi-3,
  // <start_of_turn> for Gemma),
  // written here as Jinja from the formats their model cards describe; what is checked is that our
  // renderer and transformers' apply_chat_template give the same text for the same template.
  const TEMPLATES = {
    qwen2:
      "{%- if messages[0].role != 'system' %}{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{%- endif %}" +
      "{%- for m in messages %}{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{%- endfor %}" +
      "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}",
    mistral:
      "{%- if messages[0].role == 'system' %}{%- set system = messages[0].content | trim + '\\n\\n' %}{%- set turns = messages[1:] %}" +
      "{%- else %}{%- set system = '' %}{%- set turns = messages %}{%- endif %}{{- bos_token }}" +
      "{%- for m in turns %}{%- if (m.role == 'user') != (loop.index0 % 2 == 0) %}{{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{%- endif %}" +
      "{%- if m.role == 'user' %}{%- if loop.first %}{{- '[INST] ' + system + m.content | trim + ' [/INST]' }}{%- else %}{{- '[INST] ' + m.content | trim + ' [/INST]' }}{%- endif %}" +
      "{%- else %}{{- ' ' + m.content | trim + eos_token }}{%- endif %}{%- endfor %}",
    phi3:
      "{%- if messages[0].role == 'system' %}{%- set first = 1 %}{%- else %}{%- set first = 0 %}{%- endif %}" +
      "{%- for m in messages %}{%- if loop.index0 < first %}{{- '<|system|>\\n' + m.content | trim + '<|end|>\\n' }}" +
      "{%- else %}{%- if (m.role == 'user') != ((loop.index0 - first) % 2 == 0) %}{{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{%- endif %}" +
      "{{- '<|' + m.role + '|>\\n' + m.content | trim + '<|end|>\\n' }}{%- endif %}{%- endfor %}" +
      "{%- if add_generation_prompt %}{{- '<|assistant|>\\n' }}{%- endif %}",
    // Gemma's turns: <start_of_turn>user / model, a system prompt folded into the first user turn
    gemma3:
      "{{- bos_token }}{%- if messages[0].role == 'system' %}{%- set prefix = messages[0].content | trim + '\\n\\n' %}{%- set turns = messages[1:] %}" +
      "{%- else %}{%- set prefix = '' %}{%- set turns = messages %}{%- endif %}" +
      "{%- for m in turns %}{%- if (m.role == 'user') != (loop.index0 % 2 == 0) %}{{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{%- endif %}" +
      "{%- if m.role == 'assistant' %}{%- set role = 'model' %}{%- else %}{%- set role = m.role %}{%- endif %}" +
      "{{- '<start_of_turn>' + role + '\\n' + (prefix if loop.first else '') + m.content | trim + '<end_of_turn>\\n' }}{%- endfor %}" +
      "{%- if add_generation_prompt %}{{- '<start_of_turn>model\\n' }}{%- endif %}",
  } as const;
  const conversations = [
    { messages: [{ role: 'user', content: ' What is 2+2? ' }], add_generation_prompt: true },
    { messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Hello!' }, { role: 'user', content: 'Add 1 and 2.' }], add_generation_prompt: true },
    { messages: [{ role: 'user', content: 'Hi' }, { role: 'assistant', content: ' Hello! ' }], add_generation_prompt: false },
    { messages: [{ role: 'user', content: 'Hi' }, { role: 'user', content: 'again' }], add_generation_prompt: true }, // Mistral and Phi-3 raise
  ];

  it('Qwen2.5, Mistral-Instruct, Phi-3 and Gemma templates, with system prompts, several turns and the alternation error', () => {
    const dirs: string[] = [];
    for (const [f, template] of Object.entries(TEMPLATES)) {
      const d = join(dir, `template-${f}`);
      mkdirSync(d, { recursive: true });
      copyFileSync(join(dir, 'tokenizer', 'tokenizer.json'), join(d, 'tokenizer.json'));
      const config = JSON.parse(readFileSync(join(dir, 'tokenizer', 'tokenizer_config.json'), 'utf8'));
      config.chat_template = template;
      writeFileSync(join(d, 'tokenizer_config.json'), JSON.stringify(config));
      dirs.push(d);
    }
    const ref = JSON.parse(py(['templates', JSON.stringify({ dirs, conversations })])) as Record<string, Array<string | { error: string }>>;
    let errors = 0;
    for (const d of dirs) {
      const tokenizer = Tokenizer.fromDir(d);
      conversations.forEach((c, i) => {
        const theirs = ref[d]![i]!;
        if (typeof theirs === 'string') {
          expect(tokenizer.applyChatTemplate(c.messages as never, { addGenerationPrompt: c.add_generation_prompt }), `${d} #${i}`).toBe(theirs);
        } else {
          errors += 1;
          expect(() => tokenizer.applyChatTemplate(c.messages as never, { addGenerationPrompt: c.add_generation_prompt }), `${d} #${i}`).toThrow('Conversation roles must alternate');
        }
      });
    }
    expect(errors).toBe(3); // the alternation check of Mistral's, Phi-3's and Gemma's templates ran on both sides
    // and each rendered its own format (not an empty string on both sides)
    expect(ref[dirs[0]!]![0]).toContain('<|im_start|>assistant\n');
    expect(ref[dirs[1]!]![0]).toContain('[INST] What is 2+2? [/INST]');
    expect(ref[dirs[2]!]![1]).toContain('<|system|>\nBe brief.<|end|>');
    expect(ref[dirs[3]!]![1]).toContain('<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n');
  });
});

describe("Gemma 3's configs as transformers 4 wrote them", () => {
  it('rope_theta, rope_local_base_freq, rope_scaling and sliding_window_pattern give the same model as rope_parameters and layer_types', () => {
    const d = join(dir, 'gemma3-v4');
    mkdirSync(d, { recursive: true });
    copyFileSync(join(modelDir('gemma3'), 'model.safetensors'), join(d, 'model.safetensors'));
    const { rope_parameters: _rope, layer_types: _types, ...rest } = JSON.parse(readFileSync(join(modelDir('gemma3'), 'config.json'), 'utf8'));
    // layer 0 local and layer 1 global, as layer_types said: every 2nd layer attends fully
    const v4 = { ...rest, rope_theta: 1e6, rope_local_base_freq: 1e4, rope_scaling: { rope_type: 'linear', factor: 2.0 }, sliding_window_pattern: 2 };
    writeFileSync(join(d, 'config.json'), JSON.stringify(v4));
    using model = load(d);
    const logits = floats(model.logits(ids(idsRight), { attentionMask: maskOf(maskRight) }));
    expect(realDiff(logits, floats(refs.gemma3.logits_right!), maskRight, V)).toBeLessThan(LOGITS_TOL);
    // the pattern counts: every 6th layer global (the default) makes both layers local, far off
    writeFileSync(join(d, 'config.json'), JSON.stringify({ ...v4, sliding_window_pattern: undefined }));
    using local = load(d);
    const allLocal = floats(local.logits(ids(idsRight), { attentionMask: maskOf(maskRight) }));
    expect(realDiff(allLocal, floats(refs.gemma3.logits_right!), maskRight, V)).toBeGreaterThan(100 * LOGITS_TOL);
  });
});

describe('what is not implemented is refused by name', () => {
  const variant = (name: string, edit: (c: Record<string, unknown>) => Record<string, unknown>) => {
    const d = join(dir, `bad-${name}`);
    mkdirSync(d, { recursive: true });
    const from = name.startsWith('mistral') ? 'mistral' : name.startsWith('gemma') ? 'gemma3' : 'phi3';
    copyFileSync(join(modelDir(from), 'model.safetensors'), join(d, 'model.safetensors'));
    writeFileSync(join(d, 'config.json'), JSON.stringify(edit(JSON.parse(readFileSync(join(modelDir(from), 'config.json'), 'utf8')))));
    return d;
  };

  it('Gemma 1, multimodal Gemma 3, what Gemma options we lack, unknown families, longrope, partial rotary, mixed Mistral layers, LoRA targets a family lacks', () => {
    const gemma1 = variant('gemma1', (c) => ({ ...c, model_type: 'gemma', architectures: ['GemmaForCausalLM'] }));
    expectError(() => LlamaModel.load(gemma1), RangeError, "model_type 'gemma' is not supported: Gemma 1");
    const multimodal = variant('gemma-mm', (c) => ({ model_type: 'gemma3', architectures: ['Gemma3ForConditionalGeneration'], text_config: c }));
    expectError(() => LlamaModel.load(multimodal), RangeError, "model_type 'gemma3' (Gemma3ForConditionalGeneration, text and vision) is not supported: only the text model");
    for (const [key, value, message] of [
      ['attn_logit_softcapping', -1, "'attn_logit_softcapping' must be a finite number > 0 or null"],
      ['use_bidirectional_attention', true, 'use_bidirectional_attention is not supported'],
      ['hidden_activation', 'gelu', "hidden_activation 'gelu' is not supported for model_type 'gemma3_text' (only 'gelu_pytorch_tanh')"],
      ['sliding_window', null, "sliding_window null is not supported for model_type 'gemma3_text'"],
      ['rope_parameters', { rope_type: 'default', rope_theta: 10000 }, "rope_parameters must map 'full_attention' and 'sliding_attention'"],
      ['rope_parameters', { full_attention: { rope_type: 'yarn', factor: 4, rope_theta: 1e6 }, sliding_attention: { rope_type: 'default', rope_theta: 1e4 } }, "rope_parameters.full_attention of type 'yarn' is not supported (only 'default' and 'linear')"],
      ['rope_parameters', { full_attention: { rope_type: 'default', rope_theta: 1e6 }, sliding_attention: { rope_type: 'linear', factor: 2, rope_theta: 1e4 } }, "rope_parameters.sliding_attention of type 'linear' is not supported (only 'default')"],
    ] as const) {
      const d = variant(`gemma-${key}-${JSON.stringify(value).length}`, (c) => ({ ...c, [key]: value }));
      expectError(() => LlamaModel.load(d), RangeError, message);
    }
    const falcon = variant('falcon', (c) => ({ ...c, model_type: 'falcon' }));
    expectError(() => LlamaModel.load(falcon), RangeError, "model_type 'falcon' is not supported (supported: gemma2, gemma3_text, llama, mistral, phi3, qwen2, qwen3)");
    const longrope = variant('longrope', (c) => ({ ...c, rope_parameters: { rope_type: 'longrope', rope_theta: 10000, short_factor: [1, 1, 1, 1], long_factor: [1, 1, 1, 1] } }));
    expectError(() => LlamaModel.load(longrope), RangeError, "rope_scaling of type 'longrope' is not supported");
    const partial = variant('partial', (c) => ({ ...c, rope_parameters: { rope_type: 'default', rope_theta: 10000, partial_rotary_factor: 0.5 } }));
    expectError(() => LlamaModel.load(partial), RangeError, 'partial_rotary_factor 0.500000 is not supported');
    const mixed = variant('mistral-mixed', (c) => ({ ...c, layer_types: ['full_attention', 'sliding_attention'] }));
    expectError(() => LlamaModel.load(mixed), RangeError, "layer_types with full-attention layers is not supported for model_type 'mistral'");
    using phi3 = LlamaModel.load(modelDir('phi3'));
    expect(phi3.config.linearModules).toEqual(['qkv_proj', 'o_proj', 'gate_up_proj', 'down_proj']);
    expectError(() => phi3.addLora({ targets: ['q_proj'] }), RangeError, "addLora: unknown target module 'q_proj' for model_type 'phi3' (expected qkv_proj o_proj gate_up_proj down_proj)");
    expectError(() => phi3.loadAdapter(join(modelDir('mistral'), 'adapter')), Error, "are not supported for model_type 'phi3' (its modules: qkv_proj, o_proj, gate_up_proj, down_proj)");
  });
});

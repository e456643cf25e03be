// Devices: the device option everywhere (tensor factories, .to(), loadModel, train, the CLI), the
// errors when CUDA is asked of a process without it, and (with a GPU) the same work on CUDA. On a
// machine without a GPU the CUDA tests are skipped, and their names say why.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { checkDevice, cudaAvailable } from '../lib/device.js';
import { train } from '../lib/jfa/trainer.js';
import { flashbackDivergence } from '../lib/kernels.js';
import { createModel } from '../lib/model/create.js';
import { LlamaModel, loadModel } from '../lib/model/llama.js';
import { loadSafetensors } from '../lib/model/safetensors.js';
import { Tokenizer } from '../lib/model/tokenizer.js';
import { loadNative, native, prebuildFolder } from '../lib/native.js';
import { memoryStats, runtimeInfo } from '../lib/runtime.js';
import { randn, tensor, zeros } from '../lib/tensor.js';
import { expectError, root, tinyJfaRun } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'jfa-device-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const modelDir = join(dir, 'base');
beforeAll(() => createModel(modelDir, { hiddenSize: 32, intermediateSize: 64, numLayers: 2, numHeads: 2, seed: 1 }));

const info = runtimeInfo();
const cuda = cudaAvailable();
const torchVersion = loadNative().libtorch.version;
const noCuda = !info.cuda ? `this libtorch (${torchVersion}) has no CUDA` : info.cudaDevices === 0 ? 'no GPU visible' : '';
const cli = (...args: string[]) => spawnSync(process.execPath, [join(root, 'dist', 'cli', 'main.js'), ...args], { encoding: 'utf8', cwd: root, timeout: 120_000 });

describe('device option on the CPU', () => {
  it("factories take { device: 'cpu' } and give the same tensors as without it", () => {
    const a = tensor([1, 2, 3, 4], [2, 2], { device: 'cpu' });
    expect(a.device).toBe('cpu');
    expect(Array.from(a.toTypedArray() as Float32Array)).toEqual([1, 2, 3, 4]);
    expect(zeros([3], 'int64', { device: 'cpu' }).device).toBe('cpu');
    const r1 = randn([5], { seed: 7, device: 'cpu' }).toTypedArray();
    const r2 = randn([5], { seed: 7 }).toTypedArray();
    expect(r1).toEqual(r2);
  });

  it(".to('cpu') keeps the values; .to(dtype) still converts", () => {
    const a = tensor([1.5, -2.25]);
    expect(Array.from(a.to('cpu').toTypedArray() as Float32Array)).toEqual([1.5, -2.25]);
    expect(a.to('int32').dtype).toBe('int32');
  });

  it('bad device names are RangeErrors naming the value; a non-string is a TypeError', () => {
    expectError(() => tensor([1], [1], { device: 'tpu' as 'cpu' }), RangeError, "tensor: device 'tpu' is not a device", "'cuda:N'");
    expectError(() => zeros([1], 'float32', { device: 'cuda:x' as 'cpu' }), RangeError, "zeros: device 'cuda:x'");
    expectError(() => checkDevice(3, 'train'), TypeError, 'train: device must be a string');
    // The addon checks too, for callers that skip lib/tensor.ts.
    expectError(() => native().zeros([1], 'float32', 'mps'), RangeError, "zeros: device 'mps' is not a device");
    expectError(() => native().toDevice(native().zeros([1]), 'cuda:-1'), RangeError, "toDevice: device 'cuda:-1'");
  });

  it('memoryStats() lists no GPU and runtimeInfo() no CUDA runtime on a CPU build', { skip: info.cudaKernels }, () => {
    expect(memoryStats().gpus).toEqual([]);
    expect(info.cudaVersion).toBe('');
    expect(info.cudaKernels).toBe(false);
  });

  it("loadModel(dir, { device: 'cpu' }) computes what loadModel(dir) does, and says where it is", () => {
    const ids = tensor(new BigInt64Array([1n, 5n, 9n, 2n]), [1, 4]);
    using a = loadModel(modelDir);
    using b = loadModel(modelDir, { device: 'cpu' });
    expect(b.device).toBe('cpu');
    expect(b.toDevice('cpu').device).toBe('cpu');
    expect(b.logits(ids).toTypedArray()).toEqual(a.logits(ids).toTypedArray());
  });
});

describe.skipIf(cuda)(`CUDA asked where there is none (${noCuda || 'n/a: a GPU is here'})`, () => {
  it('tensor(), .to() and the addon itself refuse with one line naming libtorch and the fix', () => {
    const expectNoCuda = (fn: () => unknown, op: string) => {
      let message = '';
      try {
        fn();
      } catch (e) {
        message = (e as Error).message;
      }
      expect(message).toContain(`${op}: device 'cuda`);
      expect(message).toMatch(info.cuda ? /no GPU is visible/ : /has no CUDA; install a CUDA torch/);
      expect(message.split('\n')).toHaveLength(1);
    };
    expectNoCuda(() => tensor([1], [1], { device: 'cuda' }), 'tensor');
    expectNoCuda(() => randn([2], { device: 'cuda:0' }), 'randn');
    expectNoCuda(() => tensor([1]).to('cuda:0'), 'to');
    expectNoCuda(() => native().fromTypedArray(new Float32Array([1]), [1], 'cuda'), 'tensor');
    expectNoCuda(() => loadModel(modelDir, { device: 'cuda' }), 'loadModel');
    if (!info.cuda) expect(() => tensor([1], [1], { device: 'cuda' })).toThrow(torchVersion);
  });

  it('train({ device }) and `jfa generate|eval|train --device cuda` refuse before any work', async () => {
    const { suite, options } = tinyJfaRun();
    using model = LlamaModel.load(modelDir);
    await expect(train(model, Tokenizer.fromDir(modelDir), { newTrain: suite.newTrain.slice(0, 4) }, { ...options, device: 'cuda' })).rejects.toThrow(
      /train: device 'cuda'/,
    );
    const data = join(dir, 'new.jsonl');
    const { writeFileSync } = await import('node:fs');
    writeFileSync(data, suite.newTrain.slice(0, 4).map((r) => JSON.stringify(r)).join('\n') + '\n');
    const runs = [
      cli('generate', '--model', modelDir, '--prompt', 'hi', '--device', 'cuda'),
      cli('eval', '--model', modelDir, '--data', data, '--metric', 'rougeL', '--device', 'cuda:0'),
      cli('train', '--model', modelDir, '--data', data, '--method', 'sft', '--out', join(dir, 'cli-run'), '--device', 'cuda'),
      cli('demo', '--out', join(dir, 'cli-demo'), '--device', 'cuda'),
      cli('study', 'pcgrad', '--out', join(dir, 'cli-study'), '--device', 'cuda'),
    ];
    for (const r of runs) {
      expect(r.status).not.toBe(0);
      expect(r.stderr).toMatch(/device 'cuda(:0)?'/);
      expect(r.stderr).toMatch(info.cuda ? /no GPU is visible/ : /has no CUDA/);
    }
    // The demo refused before it wrote anything.
    expect(existsSync(join(dir, 'cli-demo'))).toBe(false);
    expect(existsSync(join(dir, 'cli-study'))).toBe(false);
    for (const bad of [
      cli('train', '--model', modelDir, '--data', data, '--method', 'sft', '--out', join(dir, 'cli-bad'), '--device', 'gpu'),
      cli('demo', '--out', join(dir, 'cli-demo-bad'), '--device', 'gpu'),
    ]) {
      expect(bad.status).not.toBe(0);
      expect(bad.stderr).toContain("must be 'cpu', 'cuda' or 'cuda:N'");
    }
  });
});

describe('precision', () => {
  const { suite, options } = tinyJfaRun();
  const data = { newTrain: suite.newTrain.slice(0, 8), flashbacks: suite.flashbacks.slice(0, 4) };
  const quick = { ...options, microBatch: 2, accumulation: 2, seed: 3 };

  it("precision must match the model's dtype", async () => {
    using model = LlamaModel.load(modelDir);
    await expect(train(model, Tokenizer.fromDir(modelDir), data, { ...quick, precision: 'bf16' })).rejects.toThrow(
      "train: precision 'bf16' needs the model loaded as bfloat16, but it is float32",
    );
    await expect(train(model, Tokenizer.fromDir(modelDir), data, { ...quick, precision: 'fp16' as 'bf16' })).rejects.toThrow(RangeError);
  });

  // Full JFA (latent pool, flashbacks, PCGrad) on a bfloat16 base: the adapters and the pool are
  // float32 masters, cast to bfloat16 in the forward; their float32 gradients train them.
  it('bf16 trains jfa on the CPU with float32 adapters and pool: finite losses, within 5% of fp32 at the first step', async () => {
    const tokenizer = Tokenizer.fromDir(modelDir);
    const run = async (precision: 'fp32' | 'bf16') => {
      using model = LlamaModel.load(modelDir, { dtype: precision === 'bf16' ? 'bfloat16' : 'float32' });
      const out = join(dir, `precision-${precision}`);
      await train(model, tokenizer, data, { ...quick, method: 'jfa', precision, device: 'cpu', outDir: out });
      const adapter = loadSafetensors(join(out, 'adapter', 'adapter_model.safetensors'));
      const dtypes = new Set(Object.values(adapter.tensors).map((t) => t.dtype));
      Object.values(adapter.tensors).forEach((t) => t.dispose());
      const pool = loadSafetensors(join(out, 'adapter', 'latent_pool.safetensors'));
      const poolDtypes = new Set([pool.tensors.A!.dtype, pool.tensors.B!.dtype]);
      const poolB = pool.tensors.B!.toTypedArray() as Float32Array;
      Object.values(pool.tensors).forEach((t) => t.dispose());
      const metrics = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { sft: number; divergence: number });
      return { metrics, dtypes, poolDtypes, poolMoved: poolB.some((v) => v !== 0) };
    };
    const fp32 = await run('fp32');
    const bf16 = await run('bf16');
    expect([...bf16.dtypes]).toEqual(['float32']);
    expect([...bf16.poolDtypes]).toEqual(['float32']);
    expect(bf16.poolMoved).toBe(true); // B starts at zero: the pool's float32 masters were trained
    expect(bf16.metrics).toHaveLength(fp32.metrics.length);
    for (const m of bf16.metrics) expect(Number.isFinite(m.sft) && Number.isFinite(m.divergence)).toBe(true);
    expect(Math.abs(bf16.metrics[0]!.sft - fp32.metrics[0]!.sft) / fp32.metrics[0]!.sft).toBeLessThan(0.05);
  });

  it('a bfloat16 model keeps float32 LoRA masters: gradients in float32, merge rounds once into bf16', () => {
    using model = LlamaModel.load(modelDir, { dtype: 'bfloat16' });
    using ref = LlamaModel.load(modelDir, { dtype: 'float32' });
    model.addLora({ r: 4, loraAlpha: 8, seed: 2 });
    ref.addLora({ r: 4, loraAlpha: 8, seed: 2 });
    const params = model.loraParameters();
    const refParams = ref.loraParameters();
    for (const [name, p] of Object.entries(params)) {
      expect(p.dtype, name).toBe('float32');
      expect(p.toTypedArray(), name).toEqual(refParams[name]!.toTypedArray()); // the same seeded init as fp32
    }
    // Give B values so the adapter changes the output, in both models alike.
    for (const [name, p] of Object.entries(params))
      if (name.includes('lora_B')) {
        const v = randn(p.shape, { seed: name.length });
        p.copyFrom(v);
        refParams[name]!.copyFrom(v);
      }
    const ids = tensor(new BigInt64Array([1n, 5n, 9n, 2n, 7n]), [1, 5]);
    const logits = model.logits(ids);
    expect(logits.dtype).toBe('bfloat16');
    logits.to('float32').sum().backward();
    const a = Object.entries(params).find(([n]) => n.includes('lora_A'))![1];
    expect(a.grad?.dtype).toBe('float32');
    expect((a.grad!.toTypedArray() as Float32Array).some((v) => v !== 0)).toBe(true);
    // Merging the float32 masters into bf16 weights gives the fp32 model's merged logits within bf16 rounding.
    model.mergeLora();
    ref.mergeLora();
    const merged = model.logits(ids).toTypedArray() as Float32Array;
    const want = ref.logits(ids).toTypedArray() as Float32Array;
    let worst = 0;
    for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(merged[i]! - want[i]!));
    expect(worst).toBeLessThan(5e-2);
  });

  it('a latent pool must be float32 or the model dtype, on its device', () => {
    using model = LlamaModel.load(modelDir, { dtype: 'bfloat16' });
    const c = model.config;
    const A = zeros([2, 2, c.numHeads * c.headDim], 'float64');
    const B = zeros([2, c.hiddenSize, 2], 'float64');
    expectError(() => model.setLatentPool(0, A, B), TypeError, 'setLatentPool: A is float64; the pool must be float32 or the model\'s bfloat16');
  });

  it('the divergence of bfloat16 logits matches float32 within bf16 rounding', () => {
    const cur = randn([3, 7, 50], { seed: 1 });
    const ref = randn([3, 7, 50], { seed: 2 });
    const mask = tensor(new Float32Array(21).fill(1), [3, 7]);
    const d32 = (flashbackDivergence(cur, ref, mask).toTypedArray() as Float32Array)[0]!;
    const d16 = (flashbackDivergence(cur.to('bfloat16'), ref.to('bfloat16'), mask).toTypedArray() as Float32Array)[0]!;
    expect(Math.abs(d16 - d32) / d32).toBeLessThan(0.02);
  });
});

describe.skipIf(!cuda)(`on CUDA (${cuda ? 'a GPU is here' : `skipped: ${noCuda}`})`, () => {
  it('tensors move to the GPU and back unchanged; memoryStats() sees the allocator', () => {
    const a = tensor([1, 2, 3], [3], { device: 'cuda' });
    expect(a.device).toBe('cuda:0');
    expect(Array.from(a.to('cpu').toTypedArray() as Float32Array)).toEqual([1, 2, 3]);
    const gpu = memoryStats().gpus[0]!;
    expect(gpu.allocatedBytes).toBeGreaterThan(0);
    expect(gpu.name.length).toBeGreaterThan(0);
  });

  it('an op mixing devices names both tensors and their devices', () => {
    expectError(() => tensor([1, 2]).add(tensor([1, 2], [2], { device: 'cuda' })), TypeError, 'b is on cuda:0 but a is on cpu');
  });

  it('a model on the GPU gives the CPU logits (fp32, 1e-4)', () => {
    const ids = tensor(new BigInt64Array([1n, 5n, 9n, 2n]), [1, 4]);
    using cpu = loadModel(modelDir);
    using gpu = loadModel(modelDir, { device: 'cuda' });
    const a = cpu.logits(ids).toTypedArray() as Float32Array;
    const b = gpu.logits(ids.to('cuda')).toTypedArray() as Float32Array;
    let worst = 0;
    for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
    expect(worst).toBeLessThan(1e-4);
  });

  it('the divergence on the GPU (kernel) matches the CPU, loss and gradient', () => {
    const cur = randn([4, 9, 300], { seed: 3 }).setRequiresGrad();
    const ref = randn([4, 9, 300], { seed: 4 });
    const mask = tensor(Float32Array.from({ length: 36 }, (_, i) => (i % 5 === 0 ? 0 : 1)), [4, 9]);
    const lc = flashbackDivergence(cur, ref, mask);
    lc.backward();
    const curG = cur.to('cuda').detach().setRequiresGrad();
    const lg = flashbackDivergence(curG, ref.to('cuda'), mask.to('cuda'));
    lg.backward();
    const a = lc.toTypedArray()[0] as number;
    expect(Math.abs((lg.toTypedArray()[0] as number) - a)).toBeLessThan(1e-4 * Math.abs(a) + 1e-6);
    const ga = cur.grad!.toTypedArray() as Float32Array;
    const gb = curG.grad!.toTypedArray() as Float32Array;
    let worst = 0;
    for (let i = 0; i < ga.length; i++) worst = Math.max(worst, Math.abs(ga[i]! - gb[i]!));
    expect(worst).toBeLessThan(1e-5);
  });
});

describe.skipIf(!cuda)(`training and generation on CUDA (${cuda ? 'a GPU is here' : `skipped: ${noCuda}`})`, () => {
  const { suite, options } = tinyJfaRun();
  const data = { newTrain: suite.newTrain.slice(0, 8), flashbacks: suite.flashbacks.slice(0, 4) };
  const quick = { ...options, microBatch: 2, accumulation: 2, seed: 3 };

  it('greedy generation on the GPU gives the CPU tokens from CPU-made ids (fp32)', async () => {
    const ids = tensor(new BigInt64Array([1n, 5n, 9n, 2n, 0n, 7n, 3n, 4n]), [2, 4]);
    const mask = tensor(new Uint8Array([1, 1, 1, 1, 0, 1, 1, 1]), [2, 4]);
    using cpu = loadModel(modelDir);
    using gpu = loadModel(modelDir, { device: 'cuda' });
    const a = await cpu.generate(ids, { attentionMask: mask, maxNewTokens: 12 });
    const b = await gpu.generate(ids, { attentionMask: mask, maxNewTokens: 12 });
    expect(Array.from(b.toTypedArray() as BigInt64Array)).toEqual(Array.from(a.toTypedArray() as BigInt64Array));
  });

  it('right-padded batches (SDPA causal, no mask) and left-padded ones (mask) give the CPU logits at real positions, with and without GQA', () => {
    const gqaDir = join(dir, 'gqa');
    createModel(gqaDir, { hiddenSize: 32, intermediateSize: 64, numLayers: 2, numHeads: 4, numKeyValueHeads: 2, seed: 2 });
    for (const d of [modelDir, gqaDir]) {
      using cpu = loadModel(d);
      using gpu = loadModel(d, { device: 'cuda' });
      const ids = tensor(new BigInt64Array([1n, 5n, 9n, 2n, 7n, 3n, 0n, 0n, 0n, 4n, 6n, 8n]), [2, 6]);
      for (const mask of [[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1]]) {
        const m = tensor(new Uint8Array(mask), [2, 6]);
        const a = cpu.logits(ids, { attentionMask: m }).toTypedArray() as Float32Array;
        const b = gpu.logits(ids, { attentionMask: m }).toTypedArray() as Float32Array;
        const V = a.length / 12;
        let worst = 0;
        for (let pos = 0; pos < 12; pos++) if (mask[pos]) for (let v = 0; v < V; v++) worst = Math.max(worst, Math.abs(a[pos * V + v]! - b[pos * V + v]!));
        expect(worst, d).toBeLessThan(1e-4);
      }
    }
  });

  it('GQA: greedy generation (KV cache read grouped) gives the CPU tokens', async () => {
    const gqaDir = join(dir, 'gqa-gen');
    createModel(gqaDir, { hiddenSize: 32, intermediateSize: 64, numLayers: 2, numHeads: 4, numKeyValueHeads: 1, seed: 3 });
    const ids = tensor(new BigInt64Array([1n, 5n, 9n, 2n, 7n, 3n, 4n, 6n]), [2, 4]);
    using cpu = loadModel(gqaDir);
    using gpu = loadModel(gqaDir, { device: 'cuda' });
    const a = await cpu.generate(ids, { maxNewTokens: 10 });
    const b = await gpu.generate(ids, { maxNewTokens: 10 });
    expect(Array.from(b.toTypedArray() as BigInt64Array)).toEqual(Array.from(a.toTypedArray() as BigInt64Array));
  });

  for (const precision of ['fp32', 'bf16'] as const)
    it(`jfa trains on the GPU in ${precision} (latent pool, flashbacks, PCGrad): float32 masters on the GPU, losses near the CPU run's`, async () => {
      const tokenizer = Tokenizer.fromDir(modelDir);
      const run = async (device: 'cpu' | 'cuda') => {
        using model = LlamaModel.load(modelDir, { dtype: precision === 'bf16' ? 'bfloat16' : 'float32' });
        const out = join(dir, `cuda-${precision}-${device}`);
        await train(model, tokenizer, data, { ...quick, precision, device, outDir: out });
        if (device === 'cuda') {
          expect(model.device).toBe('cuda:0');
          for (const p of Object.values(model.loraParameters())) expect([p.device, p.dtype]).toEqual(['cuda:0', 'float32']);
        }
        return readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { sft: number; divergence: number });
      };
      const cpuRun = await run('cpu');
      const gpuRun = await run('cuda');
      expect(gpuRun).toHaveLength(cpuRun.length);
      const tolerance = precision === 'bf16' ? 0.05 : 1e-3;
      for (const [i, m] of gpuRun.entries()) {
        expect(Number.isFinite(m.sft) && Number.isFinite(m.divergence)).toBe(true);
        if (i === 0) expect(Math.abs(m.sft - cpuRun[0]!.sft) / cpuRun[0]!.sft).toBeLessThan(tolerance);
      }
    });
});

describe('prebuilt binaries per libtorch', () => {
  it('CPU builds use <platform>-<arch>, CUDA builds <platform>-<arch>-cuXYZ from the torch version', () => {
    expect(prebuildFolder('2.13.0+cpu', false, 'linux', 'x64')).toBe('linux-x64');
    expect(prebuildFolder('2.14.1+cu130', true, 'linux', 'x64')).toBe('linux-x64-cu130');
    expect(prebuildFolder('2.14.1+cu128', true, 'linux', 'arm64')).toBe('linux-arm64-cu128');
    expect(prebuildFolder('2.14.1', true, 'linux', 'x64')).toBe('linux-x64-cuda');
    expect(prebuildFolder('2.13.0+cpu', false)).toBe(`${process.platform}-${process.arch}`);
  });
});

describe('the GPU check script', () => {
  it('on a machine without a GPU it stops at once with a clear message and exit 2', () => {
    const out = mkdtempSync(join(tmpdir(), 'jfa-check-'));
    try {
      const r = spawnSync('bash', [join(root, 'scripts', 'device', 'check.sh')], {
        encoding: 'utf8',
        cwd: root,
        timeout: 60_000,
        env: { ...process.env, OUT: out, JFA_CHECK_NVIDIA_SMI: join(out, 'no-nvidia-smi'), JFA_CHECK_DRY_RUN: '', JFA_CHECK_RUNNING: '' },
      });
      expect(r.status).toBe(2);
      expect(r.stderr).toContain('check.sh: no NVIDIA GPU');
      expect(readFileSync(join(out, 'check.log'), 'utf8')).toContain('no NVIDIA GPU');
      // A dry-run mode it does not know stops it before any work too.
      const bad = spawnSync('bash', [join(root, 'scripts', 'device', 'check.sh')], {
        encoding: 'utf8',
        cwd: root,
        timeout: 60_000,
        env: { ...process.env, OUT: out, JFA_CHECK_DRY_RUN: 'gpu', JFA_CHECK_RUNNING: '' },
      });
      expect(bad.status).toBe(2);
      expect(bad.stderr).toContain("JFA_CHECK_DRY_RUN must be 'cpu' or unset, got 'gpu'");
      // Never one check inside another (a check runs this very test).
      const nested = spawnSync('bash', [join(root, 'scripts', 'device', 'check.sh')], {
        encoding: 'utf8',
        cwd: root,
        timeout: 60_000,
        env: { ...process.env, OUT: out, JFA_CHECK_RUNNING: '4242' },
      });
      expect(nested.status).toBe(2);
      expect(nested.stderr).toContain('already inside a GPU check (JFA_CHECK_RUNNING=4242)');
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });
});

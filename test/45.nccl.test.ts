// Data-parallel training of a CUDA model over NCCL. Everywhere: which backend a model's device
// needs, and the refusals (by name, saying what is missing) of a build without NCCL. With a GPU and
// an NCCL build (scripts/device/check.sh): NCCL's collectives at world size 1 (which, unlike Gloo's,
// really run), and a world-size-1 NCCL run of a tiny model on the GPU against a single-process run
// on the same GPU, within test/30's data-parallel bound. Without either those are skipped, and their
// names say why. scripts/cuda-build.mjs runs this file with the CUDA build (JFA_EXPECT_NCCL=1).
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { freePort } from '../lib/bench/launch.js';
import { rankDevice } from '../lib/cli/train.js';
import { cudaAvailable } from '../lib/device.js';
import { ncclBuilt, ProcessGroup } from '../lib/distributed.js';
import { ERROR_CODES } from '../lib/errors.js';
import { checkDataParallelDevice } from '../lib/jfa/data-parallel.js';
import { train } from '../lib/jfa/trainer.js';
import { createModel } from '../lib/model/create.js';
import { LlamaModel } from '../lib/model/llama.js';
import { Tokenizer } from '../lib/model/tokenizer.js';
import { loadNative } from '../lib/native.js';
import { runtimeInfo } from '../lib/runtime.js';
import { tensor } from '../lib/tensor.js';
import { collectRun, expectError, maxSafetensorsDiff, root, tinyJfaRun, type WorkerRun } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'jfa-nccl-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const modelDir = join(dir, 'base');
beforeAll(() => createModel(modelDir, { hiddenSize: 32, intermediateSize: 64, numLayers: 2, numHeads: 2, seed: 1 }));

const info = runtimeInfo();
const nccl = ncclBuilt();
const gpu = cudaAvailable();
const torchVersion = loadNative().libtorch.version;
const noGpu = !info.cuda ? `this libtorch (${torchVersion}) has no CUDA` : info.cudaDevices === 0 ? 'no GPU visible' : '';
const noNccl = nccl ? '' : 'this build has no NCCL (JFA_WITH_NCCL not compiled in)';
const skipGpu = noGpu || noNccl;
// test/30's bound between a data-parallel run and one process.
const TOLERANCE = 1e-5;
const NCCL_REFUSAL = "needs c10d's NCCL backend, which this build of the addon lacks";

describe('which backend carries a model (any build)', () => {
  it('the addon says whether it has NCCL: never a CPU-only libtorch, always the CI CUDA build', () => {
    expect(typeof nccl).toBe('boolean');
    if (!info.cuda) expect(nccl).toBe(false);
    if (process.env.JFA_EXPECT_NCCL === '1') expect(nccl).toBe(true);
  });

  it('a GPU model needs NCCL in the build; gloo carries CPU models, nccl GPU ones: OptionErrors by name', () => {
    const opts = { rank: 0, worldSize: 2 };
    expectError(() => checkDataParallelDevice('cuda:0', opts, false), RangeError, `model on cuda:0 ${NCCL_REFUSAL}`, 'JFA_NCCL=1', 'drop distributed / --nproc');
    expect(() => checkDataParallelDevice('cuda:0', opts, true)).not.toThrow();
    expect(() => checkDataParallelDevice('cuda', { ...opts, backend: 'nccl' }, true)).not.toThrow();
    expectError(() => checkDataParallelDevice('cuda:1', { ...opts, backend: 'gloo' }, true), RangeError, 'backend gloo carries', 'a model on cuda:1 trains over nccl');
    expectError(() => checkDataParallelDevice('cpu', { ...opts, backend: 'nccl' }, true), RangeError, 'backend nccl carries CUDA tensors only; a model on cpu trains over gloo');
    expect(() => checkDataParallelDevice('cpu', opts, false)).not.toThrow();
    let code: unknown;
    try {
      checkDataParallelDevice('cuda', opts, false);
    } catch (e) {
      code = (e as { code?: unknown }).code;
    }
    expect(code).toBe(ERROR_CODES.option);
  });

  it("a local launch's ranks on 'cuda' take the GPU of their LOCAL_RANK; an explicit index or the CPU stays", () => {
    const d = { rank: 1, worldSize: 2 };
    expect(rankDevice('cuda', d, { LOCAL_RANK: '1' })).toBe('cuda:1');
    expect(rankDevice('cuda:0', d, { LOCAL_RANK: '1' })).toBe('cuda:0');
    expect(rankDevice('cpu', d, { LOCAL_RANK: '1' })).toBe('cpu');
    expect(rankDevice('cuda', undefined, { LOCAL_RANK: '1' })).toBe('cuda');
    expect(rankDevice('cuda', d, {})).toBe('cuda');
  });

  it('train() with distributed on a GPU: refused before any work without NCCL; with NCCL it gets as far as the device', async () => {
    const { suite, options } = tinyJfaRun();
    using model = LlamaModel.load(modelDir);
    const run = train(model, Tokenizer.fromDir(modelDir), { newTrain: suite.newTrain.slice(0, 4) }, {
      ...options,
      device: 'cuda',
      distributed: { rank: 0, worldSize: 2, masterPort: await freePort(), timeoutMs: 2000 },
    });
    if (!nccl) await expect(run).rejects.toThrow(`train: data-parallel training of a model on cuda ${NCCL_REFUSAL}`);
    else if (!gpu) await expect(run).rejects.toThrow(/train: device 'cuda'.*(no GPU is visible|has no CUDA)/);
    // With NCCL and a GPU, rank 0 of 2 gets past both and waits for rank 1 until the timeout.
    else await expect(run).rejects.toThrow(/rank 1 did not report/);
    expect(model.device).toBe(nccl && gpu ? 'cuda:0' : 'cpu');
  });

  it("a group asked for backend nccl: the build's lack of it, or a CPU device, is a RangeError naming it", async () => {
    const connect = ProcessGroup.connect({ rank: 0, worldSize: 1, backend: 'nccl', masterPort: await freePort() });
    await expect(connect).rejects.toThrow(RangeError);
    await expect(connect).rejects.toThrow(nccl ? "backend nccl carries CUDA tensors only; this rank's tensors are on cpu" : 'backend nccl needs a CUDA libtorch with');
  });

  it.skipIf(nccl)(`\`jfa train --device cuda --nproc 2\` refuses in one line, naming NCCL (${nccl ? 'skipped: this build has NCCL' : 'no NCCL here'})`, () => {
    const data = join(dir, 'new.jsonl');
    writeFileSync(data, `${tinyJfaRun().suite.newTrain.slice(0, 4).map((r) => JSON.stringify(r)).join('\n')}\n`);
    const r = spawnSync(process.execPath, [join(root, 'dist', 'cli', 'main.js'), 'train', '--model', modelDir, '--data', data, '--method', 'sft', '--out', join(dir, 'cli'), '--device', 'cuda', '--nproc', '2'], {
      encoding: 'utf8',
      cwd: root,
      timeout: 60_000,
      env: { ...process.env, RANK: undefined, WORLD_SIZE: undefined },
    });
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toContain(`train: data-parallel training of a model on cuda ${NCCL_REFUSAL}`);
  });
});

describe.skipIf(!!skipGpu)(`NCCL on one GPU (${skipGpu ? `skipped: ${skipGpu}` : 'a GPU and NCCL are here'})`, () => {
  it("backend 'auto' on a GPU is NCCL; a world of one sums, scales and broadcasts CUDA and CPU tensors through it", async () => {
    using group = await ProcessGroup.connect({ rank: 0, worldSize: 1, masterPort: await freePort(), timeoutMs: 30_000 }, 'cuda');
    expect(group.backend).toBe('nccl');
    const onGpu = tensor([1, 2, 3], [3], { device: 'cuda' });
    const onCpu = tensor([4, 5], [2]);
    await group.allReduce([onGpu, onCpu], { scale: 0.5 });
    expect(Array.from(onGpu.to('cpu').toTypedArray() as Float32Array)).toEqual([0.5, 1, 1.5]);
    expect(Array.from(onCpu.toTypedArray() as Float32Array)).toEqual([2, 2.5]);
    expect(onGpu.device).toBe('cuda:0');
    expect(onCpu.device).toBe('cpu');
    const perTensor = tensor([7, 8], [2], { device: 'cuda' });
    await group.allReduce([perTensor], { bucket: 'tensor' });
    expect(Array.from(perTensor.to('cpu').toTypedArray() as Float32Array)).toEqual([7, 8]);
    const b = tensor([9, 10], [2]);
    await group.broadcast([b], 0);
    expect(Array.from(b.toTypedArray() as Float32Array)).toEqual([9, 10]);
    await group.barrier();
  });

  it(`a world-size-1 NCCL run of jfa (PCGrad, latent pool) on the GPU ends at the single-process GPU adapter (${TOLERANCE})`, { timeout: 240_000 }, async () => {
    const worker = join(root, 'test', 'distributed', 'worker.mjs');
    const run = (args: Record<string, unknown>): Promise<WorkerRun> =>
      collectRun(
        spawn(process.execPath, [worker, JSON.stringify({ model: modelDir, device: 'cuda', ...args })], {
          cwd: root,
          env: { ...process.env, OMP_NUM_THREADS: '1', RANK: undefined, WORLD_SIZE: undefined },
          stdio: ['ignore', 'pipe', 'pipe'],
        }),
      );
    const one = join(dir, 'gpu-one');
    const nccl1 = join(dir, 'gpu-nccl');
    // One after the other: the two processes share the GPU.
    const single = await run({ out: one });
    const world1 = await run({ out: nccl1, rank: 0, world: 1, port: await freePort(), backend: 'nccl', timeoutMs: 60_000 });
    for (const r of [single, world1]) expect(r.code, r.stderr).toBe(0);
    expect(world1.stdout.trim().split('\n').pop()).toBe('done 10');
    for (const file of ['adapter_model.safetensors', 'latent_pool.safetensors']) expect(maxSafetensorsDiff(join(one, 'adapter', file), join(nccl1, 'adapter', file)), file).toBeLessThan(TOLERANCE);
    const log = (d: string) => readFileSync(join(d, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { sft: number; divergence: number });
    const [a, b] = [log(one), log(nccl1)];
    expect(b).toHaveLength(10);
    expect(b.some((l) => l.divergence > 0)).toBe(true);
    a.forEach((l, i) => expect(Math.abs(l.sft - b[i]!.sft), `step ${i + 1}`).toBeLessThan(1e-4));
  });
});

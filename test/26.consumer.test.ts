// A new user's first hour, as they would go through it: the packed package installed into an empty
// project, `npx jfa doctor` on a machine with Python but no torch, `npx jfa setup-torch` against
// the pip index pip is configured with, then a forward pass there. Also: the binaries need nothing
// beyond libtorch and the C/C++ runtime, the examples/ project type-checks and runs, and the
// TensorBoard event files read back (our own reader with CRC checks, and tensorboard's).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { createModel } from '../lib/model/create.js';
import { crc32c, maskedCrc32c, TensorBoardWriter } from '../lib/util/tensorboard.js';
import { root, venvPython } from './helpers.js';
import { packedTarball, sh } from './pack.js';

const work = mkdtempSync(join(tmpdir(), 'jfa-consumer-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));
const platformDir = `${process.platform}-${process.arch}`;

/** The NEEDED entries of an ELF file, from `readelf -d`. */
function needed(file: string): string[] {
  const out = sh('readelf', ['-d', file], work);
  return [...out.matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1]!);
}

// libtorch's own libraries, and the C and C++ runtimes every Linux has.
const ALLOWED = /^(libtorch(_cpu|_cuda|_global_deps)?\.so|libc10(_cuda)?\.so|libstdc\+\+\.so\.6|libgcc_s\.so\.1|libm\.so\.6|libc\.so\.6|ld-linux[\w.-]*\.so\.\d|libpthread\.so\.0|libdl\.so\.2|librt\.so\.1)$/;

function expectSelfContained(dir: string): void {
  const binaries = readdirSync(dir).filter((f) => f.endsWith('.node') || f.endsWith('.so'));
  expect(binaries.some((f) => f.endsWith('.node')), `no .node in ${dir}`).toBe(true);
  for (const f of binaries) {
    const libs = needed(join(dir, f));
    expect(libs.length, f).toBeGreaterThan(0);
    expect(libs.filter((l) => !ALLOWED.test(l)), `${f} needs ${libs.join(', ')}`).toEqual([]);
  }
}

describe('the addon needs only libtorch and the C/C++ runtime', () => {
  it('the allow-list refuses the system BLAS, LAPACK and OpenMP', () => {
    for (const lib of ['libblas.so.3', 'liblapack.so.3', 'libgomp.so.1', 'libopenblas.so.0', 'libgfortran.so.5']) expect(ALLOWED.test(lib), lib).toBe(false);
    for (const lib of ['libtorch_cpu.so', 'libc10.so', 'libstdc++.so.6', 'ld-linux-x86-64.so.2']) expect(ALLOWED.test(lib), lib).toBe(true);
  });

  it("the checkout's build/Release binaries: NEEDED entries from readelf -d", () => {
    expectSelfContained(join(root, 'build', 'Release'));
  });

  it('every symbol resolves at load (LD_BIND_NOW), and FAISS and BLAS work through libtorch', () => {
    // With LD_BIND_NOW the loader binds every function at dlopen: a symbol that nothing in the
    // process defines fails the load here instead of at its first call.
    const code = `
      import { Index, kmeans, matmul, tensor } from ${JSON.stringify(join(root, 'dist', 'index.js'))};
      const index = Index.create({ kind: 'flat-l2', dim: 4 });
      index.add(new Float32Array([0, 0, 0, 0, 1, 1, 1, 1, 5, 5, 5, 5]));
      const r = index.search(new Float32Array([1, 1, 1, 0.9]), 2);
      const km = kmeans(new Float32Array([0, 0, 0.1, 0, 10, 10, 10.1, 10]), { dim: 2, k: 2, seed: 1 });
      const c = matmul(tensor([1, 2, 3, 4], [2, 2]), tensor([1, 0, 0, 1], [2, 2]));
      console.log(JSON.stringify({ labels: Array.from(r.labels, Number), objective: km.objective, c: Array.from(c.toTypedArray()) }));`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { encoding: 'utf8', env: { ...process.env, LD_BIND_NOW: '1' }, timeout: 120_000 });
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { labels: number[]; objective: number; c: number[] };
    expect(out.labels).toEqual([1, 0]);
    expect(out.objective).toBeCloseTo(0.01, 4);
    expect(out.c).toEqual([1, 2, 3, 4]);
  });
});

/** A TFRecord reader written from the format's description: checks both CRCs of every record. */
function readRecords(file: string): Buffer[] {
  const buf = readFileSync(file);
  const out: Buffer[] = [];
  let at = 0;
  while (at < buf.length) {
    const len = Number(buf.readBigUInt64LE(at));
    if (buf.readUInt32LE(at + 8) !== maskedCrc32c(buf.subarray(at, at + 8))) throw new Error(`${file}@${at}: bad length CRC`);
    const data = buf.subarray(at + 12, at + 12 + len);
    if (buf.readUInt32LE(at + 12 + len) !== maskedCrc32c(data)) throw new Error(`${file}@${at}: bad data CRC`);
    out.push(data);
    at += 16 + len;
  }
  return out;
}

/** Minimal protobuf field walk: [field, wire type, value] with nested messages left as bytes. */
function fields(b: Buffer): Array<[number, number, bigint | Buffer | number]> {
  const out: Array<[number, number, bigint | Buffer | number]> = [];
  let i = 0;
  const varint = () => {
    let v = 0n;
    let shift = 0n;
    for (;;) {
      const byte = b[i++]!;
      v |= BigInt(byte & 0x7f) << shift;
      shift += 7n;
      if (byte < 0x80) return v;
    }
  };
  while (i < b.length) {
    const key = Number(varint());
    const [field, wire] = [key >> 3, key & 7];
    if (wire === 0) out.push([field, wire, varint()]);
    else if (wire === 1) (out.push([field, wire, b.readDoubleLE(i)]), (i += 8));
    else if (wire === 5) (out.push([field, wire, b.readFloatLE(i)]), (i += 4));
    else if (wire === 2) {
      const n = Number(varint());
      out.push([field, wire, b.subarray(i, i + n)]);
      i += n;
    } else throw new Error(`wire type ${wire}`);
  }
  return out;
}

/** The scalars of an event file: {tag: [[step, value], ...]}, and its file_version. */
function readScalars(file: string): { version: string; scalars: Record<string, Array<[number, number]>> } {
  const scalars: Record<string, Array<[number, number]>> = {};
  let version = '';
  for (const event of readRecords(file)) {
    const f = fields(event);
    const step = Number((f.find(([n]) => n === 2)?.[2] as bigint | undefined) ?? 0n);
    const fv = f.find(([n]) => n === 3);
    if (fv) version = (fv[2] as Buffer).toString();
    const summary = f.find(([n]) => n === 5);
    if (!summary) continue;
    for (const [, , value] of fields(summary[2] as Buffer)) {
      const v = fields(value as Buffer);
      const tag = (v.find(([n]) => n === 1)![2] as Buffer).toString();
      (scalars[tag] ??= []).push([step, v.find(([n]) => n === 2)![2] as number]);
    }
  }
  return { version, scalars };
}

function eventFile(dir: string): string {
  const files = readdirSync(dir).filter((f) => f.startsWith('events.out.tfevents.'));
  expect(files).toHaveLength(1);
  return join(dir, files[0]!);
}

// tensorboard comes with the .venv's Python reference (scripts/python-requirements.txt).
const tensorboardPython = process.env.JFA_TENSORBOARD_PYTHON ?? venvPython;

/** The scalars as tensorboard's own EventAccumulator reads them. */
function tensorboardScalars(dir: string): Record<string, Array<[number, number]>> {
  const code = [
    'import json, sys',
    'from tensorboard.backend.event_processing.event_accumulator import EventAccumulator',
    'ea = EventAccumulator(sys.argv[1]); ea.Reload()',
    "print(json.dumps({t: [[e.step, e.value] for e in ea.Scalars(t)] for t in ea.Tags()['scalars']}))",
  ].join('\n');
  const r = spawnSync(tensorboardPython, ['-c', code, dir], { encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) throw new Error(`tensorboard's EventAccumulator failed (${r.status}): ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, Array<[number, number]>>;
}

describe('TensorBoard event files', () => {
  it('CRC-32C matches its check value and TFRecord masking', () => {
    expect(crc32c(Buffer.from('123456789'))).toBe(0xe3069283);
    expect(crc32c(new Uint8Array(32))).toBe(0x8a9136aa);
    const c = crc32c(Buffer.from('abc'));
    expect(maskedCrc32c(Buffer.from('abc'))).toBe(((((c >>> 15) | (c << 17)) >>> 0) + 0xa282ead8) >>> 0);
  });

  it('what the writer writes reads back with both readers, and bad input is refused', () => {
    const dir = join(work, 'tb-unit');
    const w = new TensorBoardWriter(dir);
    w.scalars(1, { 'train/loss': 2.5, lr: 0.001 });
    w.scalars(2, { 'train/loss': 1.25 });
    w.scalars(3_000_000_000, { 'train/loss': -0.5 });
    expect(() => w.scalars(-1, { a: 1 })).toThrow(TypeError);
    expect(() => w.scalars(4, { '': 1 })).toThrow(/tag is empty/);
    w.close();
    expect(() => w.scalars(5, { a: 1 })).toThrow(/closed/);
    const ours = readScalars(eventFile(dir));
    expect(ours.version).toBe('brain.Event:2');
    expect(ours.scalars['train/loss']).toEqual([[1, 2.5], [2, 1.25], [3_000_000_000, -0.5]]);
    expect(ours.scalars.lr?.[0]?.[1]).toBeCloseTo(0.001, 9);
    const theirs = tensorboardScalars(dir);
    expect(theirs['train/loss']).toEqual([[1, 2.5], [2, 1.25], [3_000_000_000, -0.5]]);
    // A flipped byte fails the CRC.
    const file = eventFile(dir);
    const bytes = readFileSync(file);
    bytes[bytes.length - 6]! ^= 0xff;
    writeFileSync(file, bytes);
    expect(() => readRecords(file)).toThrow(/bad data CRC/);
  });
});

describe('examples/quickstart', () => {
  const example = join(root, 'examples', 'quickstart');
  const model = join(work, 'tiny-model');
  const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');

  beforeAll(() => {
    // What `npm install` does with its "jfa-torch": "file:../.." dependency: a link to this checkout.
    const link = join(example, 'node_modules', 'jfa-torch');
    if (!existsSync(link)) {
      mkdirSync(join(example, 'node_modules'), { recursive: true });
      symlinkSync(join('..', '..', '..'), link);
    }
    createModel(model, { hiddenSize: 32, numLayers: 1, numHeads: 2, seed: 3 });
  });

  it('type-checks against the package types (tsc)', () => {
    const r = spawnSync(process.execPath, [tsc, '-p', join(example, 'tsconfig.json')], { encoding: 'utf8', timeout: 120_000 });
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(existsSync(join(example, 'dist', 'main.js'))).toBe(true);
  });

  it('trains with JFA on its JSONL, reports progress, evaluates, generates, and logs to TensorBoard', () => {
    const out = join(work, 'example-run');
    // Passive OpenMP waiting: on a busy 2-core machine libgomp's spinning threads made this tiny
    // run take 17 s instead of 0.1 s here (the same for the jfa train run below).
    const env = { ...process.env, EVAL_RECORDS: '4', OMP_WAIT_POLICY: 'passive' };
    const r = spawnSync(process.execPath, [join(example, 'dist', 'main.js'), model, out], { encoding: 'utf8', cwd: example, timeout: 300_000, env });
    expect(r.status, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n');
    const steps = lines.filter((l) => /^\s*\d+% step \d+\/\d+ {2}sft \d/.test(l));
    const summary = JSON.parse(lines.at(-1)!) as { steps: number; rougeL: number; exactMatch: number; adapter: string };
    // 28 records, 2 epochs, 4 per micro-batch, 1 micro-batch a step.
    expect(summary.steps).toBe(14);
    expect(steps).toHaveLength(14);
    expect(steps.at(-1)).toMatch(/^100% step 14\/14/);
    expect(lines).toContain('eval 4/4');
    expect(summary.rougeL).toBeGreaterThanOrEqual(0);
    expect(lines.some((l) => l.startsWith('generate: "'))).toBe(true);
    expect(existsSync(join(summary.adapter, 'adapter_model.safetensors'))).toBe(true);

    // Its TensorBoard file holds each step's metrics, equal (to float32) to metrics.jsonl.
    const metrics = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { step: number; sft: number; lr: number });
    const ours = readScalars(eventFile(join(out, 'tensorboard'))).scalars;
    const theirs = tensorboardScalars(join(out, 'tensorboard'));
    for (const s of [ours, theirs]) {
      expect(Object.keys(s).sort()).toEqual(['train/conflicts', 'train/divergence', 'train/grad_norm', 'train/lr', 'train/sft', 'train/tokens_per_second']);
      expect(s['train/sft']!.map(([step]) => step)).toEqual(metrics.map((m) => m.step));
      s['train/sft']!.forEach(([, v], i) => expect(v).toBeCloseTo(Math.fround(metrics[i]!.sft), 6));
      s['train/lr']!.forEach(([, v], i) => expect(v).toBeCloseTo(Math.fround(metrics[i]!.lr), 9));
    }
  });

  it('jfa train --tensorboard DIR writes the event file there', () => {
    const out = join(work, 'cli-run');
    const tb = join(work, 'cli-tb');
    const data = join(example, 'data');
    const r = spawnSync(
      process.execPath,
      [join(root, 'dist', 'cli', 'main.js'), 'train', '--model', model, '--data', join(data, 'new-tasks.jsonl'), '--flashbacks', join(data, 'flashbacks.jsonl'),
        '--method', 'flashback', '--out', out, '--epochs', '1', '--micro-batch', '7', '--accumulation', '1', '--r', '2', '--tensorboard', tb, '--json'],
      { encoding: 'utf8', timeout: 300_000, env: { ...process.env, OMP_WAIT_POLICY: 'passive' } },
    );
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ steps: 4 });
    const s = readScalars(eventFile(tb)).scalars;
    expect(s['train/divergence']!.map(([step]) => step)).toEqual([1, 2, 3, 4]);
  });
});

describe('a project that installs the packed tarball (the npm consumer)', () => {
  let app = '';
  let pkg = '';
  let env: NodeJS.ProcessEnv = {};
  const cache = join(work, 'xdg-cache');
  const npx = (...args: string[]) => spawnSync('npx', ['--no', 'jfa', ...args], { cwd: app, env, encoding: 'utf8', timeout: 900_000 });

  beforeAll(() => {
    const tarball = packedTarball();
    app = join(work, 'app');
    mkdirSync(app);
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', type: 'module' }));
    sh('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', tarball], app);
    pkg = join(app, 'node_modules', 'jfa-torch');
    // A machine with Python but no torch: a bare venv's Python, an empty per-user cache, no
    // LIBTORCH or VIRTUAL_ENV pointing at this checkout's torch.
    const bare = join(work, 'python-without-torch');
    sh('python3', ['-m', 'venv', '--without-pip', bare], work);
    env = { ...process.env, PYTHON: join(bare, 'bin', 'python'), XDG_CACHE_HOME: cache };
    for (const k of ['LIBTORCH', 'VIRTUAL_ENV', 'JFA_TORCH_CACHE']) delete env[k];
  });

  it('the prebuilt binaries in the installed package need only libtorch and the C/C++ runtime', () => {
    expectSelfContained(join(pkg, 'prebuilds', platformDir));
  });

  it('doctor, before torch: a project\'s fixes (npx jfa setup-torch), not our npm scripts or test-only Python packages', () => {
    const r = npx('doctor');
    expect(r.status).toBe(1);
    expect(r.stdout).toContain('installed as a dependency');
    expect(r.stdout).toMatch(/MISSING\s+libtorch\s+not found .*setup-torch cache: .*venv-2\.\d+\.\d+ does not exist/);
    expect(r.stdout).toMatch(new RegExp(`fix: npx jfa setup-torch \\(installs torch 2\\.\\d+\\.\\d+\\S* into ${cache}/jfa-torch/venv-2\\.\\d+\\.\\d+\\)`));
    expect(r.stdout).toMatch(/ok\s+python\s+\S+python \d+\.\d+\.\d+; venv yes, pip no, torch no/);
    expect(r.stdout).toMatch(/ok\s+faiss \(build\)\s+not needed: the prebuilt binary/);
    expect(r.stdout).not.toContain('npm run setup');
    expect(r.stdout).not.toContain('python reference');
    expect(r.stdout).not.toContain('transformers');
  });

  it('without a usable Python, doctor and setup-torch say what to install instead', () => {
    const saved = env;
    env = { ...env, PYTHON: join(work, 'no-such-python') };
    try {
      const d = npx('doctor');
      expect(d.status).toBe(1);
      expect(d.stdout).toMatch(/MISSING\s+python\s+\S+no-such-python not found or does not run/);
      expect(d.stdout).toContain('fix: install Python 3 with venv (Debian/Ubuntu: apt-get install python3 python3-venv), then npx jfa setup-torch; or download libtorch');
      const s = npx('setup-torch');
      expect(s.status).toBe(1);
      expect(s.stderr).toContain(`setup-torch: cannot run ${join(work, 'no-such-python')}. Fix: install Python 3 with its venv module`);
      expect(readdirSync(join(cache, 'jfa-torch')).filter((d) => d.startsWith('venv-'))).toEqual([]);
    } finally {
      env = saved;
    }
  });

  it('doctor --fix runs setup-torch: the pinned torch into the cache venv, one line per step; doctor then finds it', () => {
    const started = Date.now();
    const r = npx('doctor', '--fix');
    expect(r.status, r.stdout + r.stderr).toBe(0);
    // The checks before (libtorch missing), the set-up, the checks after (all ok).
    expect(r.stdout).toMatch(/MISSING\s+libtorch[\s\S]*setup-torch \[1\/4\][\s\S]*ok\s+libtorch\s+2\.\d+\.\d+\S* at .*\(from setup-torch cache, CPU\)/);
    const lines = r.stdout.trim().split('\n');
    expect(lines.filter((l) => /^setup-torch \[\d\/4\]/.test(l)).map((l) => l.slice(0, 17))).toEqual(['setup-torch [1/4]', 'setup-torch [2/4]', 'setup-torch [3/4]', 'setup-torch [4/4]']);
    expect(r.stdout).toMatch(new RegExp(`\\[4/4\\] check: the loader finds libtorch 2\\.\\d+\\.\\d+\\S* at ${cache}/jfa-torch/venv-`));
    console.log(`setup-torch took ${((Date.now() - started) / 1000).toFixed(0)} s`);
    expect(readFileSync(join(cache, 'jfa-torch', 'setup-torch.log'), 'utf8')).toContain('--retries 1 --timeout 15');

    const d = npx('doctor', '--json');
    expect(d.status, d.stdout).toBe(0);
    const checks = Object.fromEntries((JSON.parse(d.stdout) as Array<{ name: string; ok: boolean; detail: string }>).map((c) => [c.name, c]));
    expect(checks.libtorch?.detail).toContain('(from setup-torch cache, CPU)');
    expect(checks.addon?.detail).toContain(`${pkg}/prebuilds/${platformDir}/`);
    expect(checks['faiss (runtime)']?.ok).toBe(true);
  }, 900_000);

  it('setup-torch after that changes nothing (idempotent)', () => {
    const r = npx('setup-torch');
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/\[3\/4\] pip: torch 2\.\d+\.\d+\S* is installed already/);
    expect(r.stdout).toContain('already had torch');
  });

  it('loads the shipped model and runs a forward pass in the project', () => {
    const code = `
      import { LlamaModel, Tokenizer, nativeLocation } from 'jfa-torch';
      const dir = 'node_modules/jfa-torch/models/jfa-base';
      const tokenizer = Tokenizer.fromDir(dir);
      const model = await LlamaModel.loadAsync(dir);
      const batch = tokenizer.batch(['Add the two numbers.\\n2 + 3\\n']);
      const logits = model.logits(batch.ids, { attentionMask: batch.attentionMask });
      const values = logits.toTypedArray();
      console.log(JSON.stringify({ shape: logits.shape, finite: values.every(Number.isFinite), vocab: model.config.vocabSize, where: nativeLocation() }));`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { cwd: app, env, encoding: 'utf8', timeout: 300_000 });
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { shape: number[]; finite: boolean; vocab: number; where: { binaryKind: string; libtorchRoot: string } };
    expect(out.shape[0]).toBe(1);
    expect(out.shape[2]).toBe(out.vocab);
    expect(out.finite).toBe(true);
    expect(out.where.binaryKind).toBe('prebuilt');
    expect(out.where.libtorchRoot.startsWith(join(cache, 'jfa-torch'))).toBe(true);
  });
});

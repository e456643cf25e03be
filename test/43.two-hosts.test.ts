// Data-parallel training across two hosts for real: two network namespaces joined by a veth pair
// (10.231.7.1/30 and .2), rank 0 in one and rank 1 in the other, MASTER_ADDR on the veth, each host
// with its own output folder (no shared disk). Nothing routes out of the namespaces. Checks: the
// result equals one process's; a link cut mid-run stops BOTH ranks within the timeout plus a few
// seconds, each with one line naming the peer and the cause, nothing half-written, and rank 0's
// checkpoint resumes across the two hosts to the uninterrupted adapter; a rank killed on one host
// stops the other in one line.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { createModel } from '../lib/model/create.js';
import { collectRun, maxSafetensorsDiff, root, type WorkerRun } from './helpers.js';

const ADDR = ['10.231.7.1', '10.231.7.2'];
// Unique per run, so that parallel runs and leftovers of killed ones never meet (interface names: at most 15 characters).
const NS = [`jfa${process.pid}a`, `jfa${process.pid}b`];
const VETH = [`jv${process.pid}a`, `jv${process.pid}b`];
const TOLERANCE = 1e-5; // test/30's bound over loopback
const TIMEOUT_MS = 8000; // --dist-timeout-ms of the failure runs
const STOP_SLACK_MS = 5000; // "the timeout plus a few seconds"
const HARD_LIMIT_MS = 120_000; // no rank outlives this, whatever happens

/** Why namespaces cannot be made here, or undefined when they can. */
function unavailable(): string | undefined {
  if (process.platform !== 'linux') return `not Linux (${process.platform})`;
  if (process.getuid?.() !== 0) return 'not root (network namespaces need CAP_NET_ADMIN)';
  const ip = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  if (ip.error || ip.status !== 0) return `no usable 'ip netns' (${ip.error?.message ?? ip.stderr.trim()}): install iproute2`;
  // Root in a container without CAP_SYS_ADMIN cannot make one: try.
  const probe = `jfa${process.pid}probe`;
  const made = spawnSync('ip', ['netns', 'add', probe], { encoding: 'utf8' });
  spawnSync('ip', ['netns', 'del', probe]);
  if (made.status !== 0) return `cannot make a network namespace (${made.stderr.trim()})`;
  return undefined;
}
const reason = unavailable();
// The CI sets JFA_REQUIRE_NETNS=1: there a missing capability fails the file instead of skipping it.
if (reason && process.env.JFA_REQUIRE_NETNS === '1') throw new Error(`test/43 needs network namespaces (JFA_REQUIRE_NETNS=1): ${reason}`);

function ip(...args: string[]): void {
  const r = spawnSync('ip', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr.trim()}`);
}

/** Kills whatever still runs in our namespaces and deletes them (the veth pair goes with them). */
function teardown(): void {
  for (const ns of NS) {
    const pids = spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).stdout ?? '';
    for (const pid of pids.split('\n').filter(Boolean)) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        /* gone already */
      }
    }
    spawnSync('ip', ['netns', 'del', ns]);
  }
}

const linkUp = () => VETH.forEach((v, i) => ip('-n', NS[i]!, 'link', 'set', v, 'up'));

const dir = mkdtempSync(join(tmpdir(), 'jfa-hosts-'));
const model = join(dir, 'base');
const worker = join(root, 'test', 'distributed', 'worker.mjs');
let port = 29612;

type Run = WorkerRun;

/** One worker process, in namespace `ns` (or this one), killed after HARD_LIMIT_MS at the latest. */
function runWorker(ns: string | undefined, args: Record<string, unknown>, onLine?: (line: string, pid: number) => void): Promise<Run> {
  const argv = [worker, JSON.stringify({ model, ...args })];
  // `ip netns exec` execs the command: the child's pid is node's.
  const child = ns ? spawn('ip', ['netns', 'exec', ns, process.execPath, ...argv], { cwd: root, env: env(), stdio: ['ignore', 'pipe', 'pipe'] }) : spawn(process.execPath, argv, { cwd: root, env: env(), stdio: ['ignore', 'pipe', 'pipe'] });
  const limit = setTimeout(() => child.kill('SIGKILL'), HARD_LIMIT_MS);
  return collectRun(child, onLine, () => clearTimeout(limit));
}
const env = () => ({ ...process.env, OMP_NUM_THREADS: '1', RANK: undefined, WORLD_SIZE: undefined, GLOO_SOCKET_IFNAME: undefined, TORCH_CPP_LOG_LEVEL: undefined });

/** Both ranks, rank r in namespace r with its own output folder `${out}-r`; MASTER_ADDR is rank 0's veth address. */
function twoHosts(args: Record<string, unknown>, onLine: (rank: number, line: string, pid: number) => void = () => {}): Promise<Run[]> {
  const p = port++;
  return Promise.all(
    [0, 1].map((rank) => runWorker(NS[rank], { ...args, out: `${args.out as string}-${rank}`, rank, world: 2, port: p, addr: ADDR[0] }, (line, pid) => onLine(rank, line, pid))),
  );
}

const maxDiff = maxSafetensorsDiff;

const FILES = ['adapter_model.safetensors', 'latent_pool.safetensors'];
const lastLine = (s: string) => s.trim().split('\n').pop() ?? '';
/** stderr must be exactly one line, with no C++ frames or c10d log lines. */
function oneLine(r: Run): string {
  expect(r.stderr).not.toMatch(/frame #|Exception raised from|\[c10d\]|\.cpp:\d+\]/);
  const lines = r.stderr.trim().split('\n');
  expect(lines, r.stderr).toHaveLength(1);
  return lines[0]!;
}
// 40 records in micro-batches of 2, 2 per step, 2 epochs: 20 steps of JFA (PCGrad, latent tasks), as test/30.
const RUN = { extra: { epochs: 2 } };

describe.skipIf(reason !== undefined)(`two hosts: network namespaces joined by a veth pair${reason ? ` (skipped: ${reason})` : ''}`, () => {
  beforeAll(() => {
    createModel(model, { hiddenSize: 32, intermediateSize: 64, numLayers: 2, numHeads: 2, seed: 1 });
    teardown();
    try {
      NS.forEach((ns) => ip('netns', 'add', ns));
      ip('link', 'add', VETH[0]!, 'netns', NS[0]!, 'type', 'veth', 'peer', 'name', VETH[1]!, 'netns', NS[1]!);
      VETH.forEach((v, i) => {
        ip('-n', NS[i]!, 'addr', 'add', `${ADDR[i]}/30`, 'dev', v);
        ip('-n', NS[i]!, 'link', 'set', 'lo', 'up');
      });
      linkUp();
    } catch (e) {
      teardown();
      throw e;
    }
  });
  afterAll(() => {
    teardown();
    rmSync(dir, { recursive: true, force: true });
  });

  it('2 ranks on 2 hosts train the adapter and latent pool of 1 process (20 steps of JFA with PCGrad); rank 1 writes nothing', async () => {
    const out = join(dir, 'two');
    const [single, ranks] = await Promise.all([runWorker(undefined, { ...RUN, out: join(dir, 'one') }), twoHosts({ ...RUN, out })]);
    for (const r of [single, ...ranks!]) expect(r.code, r.stderr).toBe(0);
    expect(ranks!.map((r) => lastLine(r.stdout))).toEqual(['done 20', 'done 20']);
    for (const r of ranks!) expect(r.stderr).toBe('');
    for (const file of FILES) expect(maxDiff(join(dir, 'one', 'adapter', file), join(`${out}-0`, 'adapter', file)), file).toBeLessThan(TOLERANCE);
    expect(existsSync(`${out}-1`)).toBe(false);
  }, 240_000);

  it('a cut link stops both ranks within the timeout + 5 s in one line each; rank 0 checkpoint resumes across the hosts', async () => {
    const out = join(dir, 'cut');
    linkUp();
    let cutAt = 0;
    let checkpointed = false;
    const [r0, r1] = await twoHosts({ ...RUN, out, checkpointEvery: 2, timeoutMs: TIMEOUT_MS, stepDelayMs: 300 }, (rank, line) => {
      // After step 5 rank 0 has the checkpoint of step 4; the link goes down in the middle of the run.
      if (cutAt || rank !== 0 || line !== 'step 5') return;
      checkpointed = existsSync(join(`${out}-0`, 'checkpoint', 'state.json'));
      cutAt = performance.now();
      ip('-n', NS[0]!, 'link', 'set', VETH[0]!, 'down');
    });
    expect(cutAt).toBeGreaterThan(0);
    expect(checkpointed).toBe(true);
    const stopped = [r0!, r1!].map((r) => Math.round(r.endedAt - cutAt));
    console.log(`cut link: rank 0 stopped ${stopped[0]} ms after the cut, rank 1 ${stopped[1]} ms (timeout ${TIMEOUT_MS} ms)`);
    expect(r0!.code, r0!.stderr).toBe(1);
    expect(r1!.code, r1!.stderr).toBe(1);
    expect(oneLine(r0!)).toMatch(/^distributed \(rank 0 of 2, 10\.231\.7\.1:\d+\): the all-reduce of micro-batch \d+ failed: rank 1 stopped responding \(.*network to it is down\)/);
    expect(oneLine(r1!)).toMatch(/^distributed \(rank 1 of 2, 10\.231\.7\.1:\d+\): the all-reduce of micro-batch \d+ failed: rank 0 cannot be reached \(its store at 10\.231\.7\.1:\d+ is gone or did not answer within 2000 ms: it died, or the network to it is down\)/);
    for (const ms of stopped) expect(ms).toBeLessThan(TIMEOUT_MS + STOP_SLACK_MS);
    for (const r of [r0!, r1!]) expect(lastLine(r.stdout)).toBe('error ERR_JFA_DISTRIBUTED');
    // Nothing half-written: rank 0's folder holds its last whole checkpoint and no temporary folder; rank 1 wrote nothing.
    const left = readdirSync(`${out}-0`);
    expect(left.filter((n) => n.includes('.tmp-'))).toEqual([]);
    expect(left).not.toContain('adapter');
    const step = (JSON.parse(readFileSync(join(`${out}-0`, 'checkpoint', 'state.json'), 'utf8')) as { step: number }).step;
    expect(step).toBe(4); // step 6 needs rank 1, cut off before it
    expect(existsSync(`${out}-1`)).toBe(false);

    // The link is back: the run resumes on the two hosts from rank 0's checkpoint (rank 1's folder has none) and ends at the uninterrupted adapter.
    linkUp();
    const resumed = await twoHosts({ ...RUN, out, checkpointEvery: 2, resume: true });
    for (const r of resumed) expect(r.code, r.stderr).toBe(0);
    expect(resumed.map((r) => lastLine(r.stdout))).toEqual(['done 20', 'done 20']);
    expect(resumed[0]!.stdout).toContain(`step ${step + 1}\n`);
    expect(resumed[0]!.stdout).not.toContain(`step ${step}\n`);
    for (const file of FILES) expect(maxDiff(join(`${out}-0`, 'adapter', file), join(dir, 'two-0', 'adapter', file)), file).toBeLessThan(TOLERANCE);
  }, 300_000);

  it('a resume where rank 0 has no checkpoint stops both ranks with its reason', async () => {
    linkUp();
    const out = join(dir, 'nothing');
    const [r0, r1] = await twoHosts({ ...RUN, out, resume: true, timeoutMs: TIMEOUT_MS });
    expect(r0!.code).toBe(1);
    expect(r1!.code).toBe(1);
    expect(oneLine(r0!)).toMatch(/^train: nothing to resume in .*nothing-0$/);
    expect(oneLine(r1!)).toMatch(/^train: rank 0 cannot resume: train: nothing to resume in .*nothing-0$/);
    for (const r of [r0!, r1!]) expect(lastLine(r.stdout)).toBe('error ERR_JFA_CHECKPOINT');
  }, 120_000);

  it.each([0, 1])('kill -9 of rank %i on its host: the other stops within the timeout in one line naming it', async (killed) => {
    linkUp();
    const out = join(dir, `killed-${killed}`);
    let killedAt = 0;
    const runs = await twoHosts({ ...RUN, out, checkpointEvery: 2, timeoutMs: TIMEOUT_MS, stepDelayMs: 300 }, (rank, line, pid) => {
      if (killedAt || rank !== killed || line !== 'step 5') return;
      killedAt = performance.now();
      process.kill(pid, 'SIGKILL');
    });
    const survivor = runs[1 - killed]!;
    console.log(`rank ${killed} killed: rank ${1 - killed} stopped ${Math.round(survivor.endedAt - killedAt)} ms later`);
    expect(runs[killed]!.signal).toBe('SIGKILL');
    expect(survivor.code, survivor.stderr).toBe(1);
    const line = oneLine(survivor);
    expect(line).toMatch(new RegExp(`^distributed \\(rank ${1 - killed} of 2, 10\\.231\\.7\\.1:\\d+\\): `));
    expect(line).toMatch(killed === 1 ? /rank 1 stopped responding/ : /rank 0 cannot be reached/);
    expect(lastLine(survivor.stdout)).toBe('error ERR_JFA_DISTRIBUTED');
    expect(survivor.endedAt - killedAt).toBeLessThan(TIMEOUT_MS + STOP_SLACK_MS);
  }, 240_000);
});

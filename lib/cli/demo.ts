// `jfa demo`. Until the trainer lands this walks through the native layer end to end: load,
// seeded tensors, a timed matmul, the same work async while the event loop ticks, a rejected bad
// call, and a scope freeing its tensors. It prints what it measured.
import { performance } from 'node:perf_hooks';

import { matmul, matmulAsync, randn, scope } from '../tensor.js';
import { memoryStats, nativeLocation, runtimeInfo } from '../runtime.js';

export async function runDemo(opts: { json: boolean }): Promise<void> {
  const where = nativeLocation();
  const info = runtimeInfo();
  const n = 1024;
  const result = await (async () => {
    const [a, b] = [randn([n, n], { seed: 1 }), randn([n, n], { seed: 2 })];
    matmul(a, b).dispose(); // warm-up
    let t = performance.now();
    const reps = 10;
    for (let i = 0; i < reps; i++) matmul(a, b).dispose();
    const syncMs = (performance.now() - t) / reps;

    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    t = performance.now();
    for (let i = 0; i < reps; i++) (await matmulAsync(a, b)).dispose();
    const asyncMs = (performance.now() - t) / reps;
    clearInterval(timer);

    let rejected = '';
    try {
      matmul(randn([2, 3]), randn([2, 3]));
    } catch (e) {
      rejected = `${(e as Error).name}: ${(e as Error).message}`;
    }
    const before = memoryStats().liveTensors;
    scope(() => {
      for (let i = 0; i < 100; i++) randn([64, 64]);
    });
    const after = memoryStats().liveTensors;
    a.dispose();
    b.dispose();
    return {
      gflops: (2 * n ** 3) / (syncMs * 1e6),
      syncMs,
      asyncMs,
      ticksDuringAsync: ticks,
      rejected,
      scopeFreed: before === after,
    };
  })();
  const report = { addon: where, runtime: info, matmul: { n, ...result } };
  if (opts.json) {
    console.log(JSON.stringify(report, null, 2));
    return;
  }
  console.log(`jfa-torch demo (native layer; the JFA fine-tuning demo arrives with the trainer)
  addon      ${where.binaryPath} (${where.binaryKind}), loaded in ${where.loadMs.toFixed(0)} ms
  libtorch   ${info.torchVersion} at ${where.libtorchRoot}, ${info.numThreads} threads, CUDA ${info.cuda ? 'yes' : 'no'}
  matmul     ${n}x${n} fp32: ${result.syncMs.toFixed(2)} ms (${result.gflops.toFixed(1)} GFLOP/s)
  async      ${result.asyncMs.toFixed(2)} ms per matmul; the event loop ticked ${result.ticksDuringAsync} times meanwhile
  bad call   ${result.rejected}
  scope      100 tensors made inside a scope were ${result.scopeFreed ? 'all freed' : 'NOT all freed'} on exit`);
}

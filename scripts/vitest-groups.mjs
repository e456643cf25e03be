// The vitest suites in two groups, for `npm test` and the sanitizer pass: most files two at a time,
// each process on one intra-op thread (OMP_NUM_THREADS=1: two 2-thread libtorch processes on 2 cores
// spin against each other), then the files that must have the machine to themselves, one at a
// time with the default threads. On 2 cores this takes about half the serial time of the first group:
// much of it is processes starting, the addon loading and CLI children, which one core runs as fast as two.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * Runs `files` with vitest: those not in `alone` in parallel, then those in `alone` one by one.
 * With no files, one serial run of vitest with `args` alone (files and flags as given on a command line).
 * @param {object} o
 * @param {string} o.root - the repository root.
 * @param {string[]} o.files - test files, relative to root.
 * @param {string[]} o.alone - the files that run alone.
 * @param {Record<string, string>} [o.env] - extra environment for both groups.
 * @param {string[]} [o.args] - extra vitest arguments for both groups.
 * @returns {{ status: number, report: any }[]} each group's exit status and JSON report (null when vitest wrote none).
 */
export function runGroups({ root, files, alone, env = {}, args = [] }) {
  const tmp = mkdtempSync(join(tmpdir(), 'jfa-vitest-'));
  const groups = files.length
    ? [
        { files: files.filter((f) => !alone.includes(f)), parallel: true },
        { files: files.filter((f) => alone.includes(f)), parallel: false },
      ].filter((g) => g.files.length)
    : [{ files: [], parallel: false }];
  const out = groups.map((g, i) => {
    const file = join(tmp, `report-${i}.json`);
    const r = spawnSync(
      process.execPath,
      [
        join(root, 'node_modules', 'vitest', 'vitest.mjs'), 'run', '--reporter=default', '--reporter=json', `--outputFile.json=${file}`,
        ...(g.parallel ? ['--fileParallelism', '--maxWorkers=2'] : []), ...args, ...g.files,
      ],
      { cwd: root, stdio: 'inherit', env: { ...process.env, ...env, ...(g.parallel ? { OMP_NUM_THREADS: '1' } : {}) } },
    );
    let report = null;
    try {
      report = JSON.parse(readFileSync(file, 'utf8'));
    } catch {
      // vitest died before writing its report (a sanitizer abort, a crash)
    }
    return { status: r.status ?? 1, report };
  });
  rmSync(tmp, { recursive: true, force: true });
  return out;
}

/** The test files (test/*.test.ts), in order, but `skipped`. */
export function testFiles(root, skipped = []) {
  return readdirSync(join(root, 'test'))
    .filter((f) => f.endsWith('.test.ts'))
    .sort()
    .map((f) => `test/${f}`)
    .filter((f) => !skipped.includes(f));
}

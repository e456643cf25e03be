// What the benchmarks share: the PyTorch reference as a child process that answers JSON lines,
// medians, a progress line, and this process's memory as /proc reports it.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

import { packageRoot } from '../../dist/locate.js';

/**
 * Starts scripts/reference/SCRIPT with {@link referencePython}. It reads one JSON command per
 * line and answers each with one JSON line: `ask(cmd)` resolves with the answer, and rejects when
 * the answer is {"error"} or the child has died. The reference runs in its best configuration:
 * glibc's mmap and trim thresholds raised, so it pays no page faults we would not.
 */
export function startReference(script) {
  const child = spawn(referencePython(), [join(packageRoot, 'scripts', 'reference', script)], {
    env: { ...process.env, MALLOC_MMAP_THRESHOLD_: '1073741824', MALLOC_TRIM_THRESHOLD_: '1073741824' },
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const waiting = [];
  let dead;
  const die = (why) => {
    dead ??= `${script} ${why}`;
    for (const answer of waiting.splice(0)) answer({ error: dead });
  };
  child.on('error', (e) => die(`did not start (${e.message})`));
  child.on('close', (code, signal) => die(`exited with ${signal ?? code}`));
  child.stdin.on('error', () => {}); // a dead child's pipe; `die` reports why
  createInterface({ input: child.stdout }).on('line', (line) => waiting.shift()?.(JSON.parse(line)));
  return {
    ask: (cmd) =>
      new Promise((resolve, reject) => {
        if (dead) return reject(new Error(`reference: ${dead}`));
        waiting.push((r) => (r.error ? reject(new Error(`reference: ${r.error}`)) : resolve(r)));
        child.stdin.write(`${JSON.stringify(cmd)}\n`);
      }),
    close: () => child.stdin.end(),
  };
}

/**
 * The Python that runs the references: JFA_BENCH_PYTHON when set (scripts/device/check.sh sets it to
 * the GPU machine's python3), else the project's .venv, else python3 on the PATH.
 */
export function referencePython() {
  if (process.env.JFA_BENCH_PYTHON) return process.env.JFA_BENCH_PYTHON;
  const venv = join(packageRoot, '.venv', 'bin', 'python');
  return existsSync(venv) ? venv : 'python3';
}

export const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** A status line on stderr for benchmark NAME: `show(text)` rewrites it, `show.done()` clears it. */
export function progressLine(name) {
  let width = 0;
  const show = (text) => {
    const line = `${name} ${text}`;
    process.stderr.write(`${line.padEnd(width)}\r`);
    width = Math.max(width, line.length);
  };
  show.done = () => process.stderr.write(`${' '.repeat(width)}\r`);
  return show;
}

/** A field of /proc/self/status in MiB: VmRSS (resident now), VmHWM (peak since resetPeak). */
export function rss(field) {
  return Number(new RegExp(`^${field}:\\s+(\\d+)`, 'm').exec(readFileSync('/proc/self/status', 'utf8'))[1]) / 1024;
}

/** Resets VmHWM to the current resident size. */
export function resetPeak() {
  writeFileSync('/proc/self/clear_refs', '5');
}

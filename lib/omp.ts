// libgomp's wait policy, chosen before libtorch is loaded (libgomp reads its environment once, when
// it is loaded). By default libgomp's threads spin between parallel regions; when another process
// holds a core, a spinning thread waits for the scheduler instead of for its peers, and every
// parallel region can cost a scheduler slice. scripts/bench/omp.mjs measures the policies; the rule
// and its numbers are in docs/benchmarks.md ("libgomp's wait policy").
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';

/** What {@link chooseOmpPolicy} decided, and why. */
export interface OmpChoice {
  /** environment variables to set before libtorch loads (none: leave libgomp's defaults) */
  set: Record<string, string>;
  /** one line for `jfa doctor` */
  reason: string;
}

/**
 * Processes running right now besides this one: the runnable count of /proc/loadavg (which counts
 * the reader itself) less one, the median of five reads. Null where there is no /proc (libgomp
 * is Linux's OpenMP; elsewhere the choice is left alone).
 */
export function otherRunnable(read: () => string = () => readFileSync('/proc/loadavg', 'utf8')): number | null {
  try {
    const counts = Array.from({ length: 5 }, () => Number(read().split(' ')[3]?.split('/')[0]) - 1).filter((n) => Number.isFinite(n));
    if (counts.length === 0) return null;
    return counts.sort((a, b) => a - b)[Math.floor(counts.length / 2)] ?? null;
  } catch {
    return null;
  }
}

/**
 * The wait policy for this process: the user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT always wins,
 * and JFA_OMP_AUTO=0 turns the choice off; otherwise passive waiting when another process is running
 * at start (the cores are shared), libgomp's spinning default when none is. Measured (docs/benchmarks.md):
 * the demo's evaluation took 12.0 s with the defaults and 15.3 s passive on an idle 2-core machine,
 * 34.1 s and 22.1 s with one core busy.
 * @param env - the environment (default process.env).
 * @param others - processes running besides this one, null if unknown (default {@link otherRunnable}).
 * @param cores - the cores this process may use (default os.availableParallelism()).
 * @returns the variables to set and the reason.
 * @example
 * ```ts
 * chooseOmpPolicy({}, 1, 2).set; // { OMP_WAIT_POLICY: 'passive' }
 * ```
 */
export function chooseOmpPolicy(env: NodeJS.ProcessEnv = process.env, others: number | null = otherRunnable(), cores = availableParallelism()): OmpChoice {
  if (env.OMP_WAIT_POLICY) return { set: {}, reason: `OMP_WAIT_POLICY=${env.OMP_WAIT_POLICY} (set by you)` };
  if (env.GOMP_SPINCOUNT) return { set: {}, reason: `GOMP_SPINCOUNT=${env.GOMP_SPINCOUNT} (set by you)` };
  if (env.JFA_OMP_AUTO === '0') return { set: {}, reason: "libgomp's defaults (JFA_OMP_AUTO=0)" };
  if (others === null) return { set: {}, reason: "libgomp's defaults (no /proc/loadavg to tell a shared machine)" };
  if (others >= 1) return { set: { OMP_WAIT_POLICY: 'passive' }, reason: `OMP_WAIT_POLICY=passive: the cores are shared (${others} other process${others === 1 ? '' : 'es'} running at start, ${cores} cores)` };
  return { set: {}, reason: `libgomp's defaults: no other process was running at start (${cores} cores)` };
}

let applied: OmpChoice | undefined;

/** Applies {@link chooseOmpPolicy} to process.env once, before the addon loads; later calls return the first choice. */
export function applyOmpPolicy(): OmpChoice {
  if (applied) return applied;
  applied = chooseOmpPolicy();
  for (const [k, v] of Object.entries(applied.set)) process.env[k] = v;
  return applied;
}

// A task-level split, as the paper splits SuperNI: whole tasks go to training or to the held-out
// test set, never some instances of a task to each.
import type { InstanceRecord } from '../records.js';
import { createRng } from '../rng.js';

/** Records split by task name, with the task names on each side. */
export interface TaskSplit {
  /** The records of the training tasks, in their input order. */
  train: InstanceRecord[];
  /** The records of the held-out tasks, in their input order. */
  test: InstanceRecord[];
  /** The training task names, sorted. */
  trainTasks: string[];
  /** The held-out task names that have records, sorted. */
  testTasks: string[];
  /** Test task names asked for that no record has. */
  missing: string[];
}

/**
 * Test task names from a task list file's text (the SuperNI splits' test_tasks.txt): one name per
 * line; blank lines and lines starting with '#' are ignored, a ".json" suffix is dropped.
 * @param text - the list file's text.
 * @returns the task names, in file order.
 * @example
 * ```ts
 * parseTaskList('# test tasks\ntask020_mctaco_span_based_question.json\n\ntask033_winogrande_answer_generation\n');
 * // ['task020_mctaco_span_based_question', 'task033_winogrande_answer_generation']
 * ```
 */
export function parseTaskList(text: string): string[] {
  return text
    .split('\n')
    .map((l) => l.trim().replace(/\.json$/i, ''))
    .filter((l) => l !== '' && !l.startsWith('#'));
}

/**
 * Splits records by task: `testTasks` names the held-out tasks, or `fraction` holds out that share
 * of the tasks (rounded, at least one when there are two or more), chosen by a seeded shuffle of
 * the sorted task names, so the same seed and tasks give the same split.
 * @param records - the records to split.
 * @param how - `testTasks`, the held-out task names; or `fraction` of the tasks to hold out and the shuffle's `seed` (default 0).
 * @returns the records and task names on each side, and the asked-for test tasks that no record has.
 * @throws RangeError when `how` has no `testTasks` and its `fraction` is missing or not in (0, 1).
 * @example
 * ```ts
 * import { readFileSync } from 'node:fs';
 * const { train, test, missing } = splitByTask(records, { testTasks: parseTaskList(readFileSync('test_tasks.txt', 'utf8')) });
 * const bySeed = splitByTask(records, { fraction: 0.1, seed: 7 });
 * ```
 */
export function splitByTask(records: readonly InstanceRecord[], how: { testTasks: readonly string[] } | { fraction: number; seed?: number }): TaskSplit {
  const tasks = [...new Set(records.map((r) => r.task))].sort();
  let test: Set<string>;
  let missing: string[] = [];
  if ('testTasks' in how) {
    test = new Set(how.testTasks);
    missing = [...test].filter((t) => !tasks.includes(t));
  } else {
    const { fraction, seed = 0 } = how;
    if (!(fraction > 0 && fraction < 1)) throw new RangeError(`split: the held-out fraction must be in (0, 1), got ${fraction}`);
    const n = tasks.length < 2 ? 0 : Math.min(tasks.length - 1, Math.max(1, Math.round(fraction * tasks.length)));
    test = new Set(createRng(seed).fork('task-split').shuffle(tasks).slice(0, n));
  }
  return {
    train: records.filter((r) => !test.has(r.task)),
    test: records.filter((r) => test.has(r.task)),
    trainTasks: tasks.filter((t) => !test.has(t)),
    testTasks: tasks.filter((t) => test.has(t)),
    missing,
  };
}

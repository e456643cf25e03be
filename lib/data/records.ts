// The record shapes of DESIGN.md's "Data" contract, shared by the generators, JSONL I/O and metrics.

/** A new-task training/eval instance; old-task eval records also carry `answer`. */
export interface InstanceRecord {
  /** the task's name */
  task: string;
  /** what to do, in words */
  instruction: string;
  /** the instance's input */
  input: string;
  /** the target output */
  output: string;
  /** the answer scoring extracts (a number, an option letter, or an exact string), for old-task eval */
  answer?: string;
  /** The published format an importer read the record from (`jfa eval --metric auto` scores by it). */
  format?: string;
  /** a precomputed sample embedding for latent-task retrieval (hidden size of the model) */
  embedding?: number[];
}

/** An old-task record as the generators make it: always scoreable by its `answer`. */
export interface OldRecord extends InstanceRecord {
  /** the answer scoring extracts */
  answer: string;
}

/** A flashback: a prompt from an old task, without a target. */
export type FlashbackRecord =
  | {
      /** the old task's name */
      task: string;
      /** what to do, in words */
      instruction: string;
      /** the instance's input */
      input: string;
      /** a precomputed sample embedding */
      embedding?: number[];
    }
  | {
      /** the old task's name */
      task: string;
      /** the whole prompt */
      prompt: string;
      /** a precomputed sample embedding */
      embedding?: number[];
    };

export function toFlashback(r: InstanceRecord): FlashbackRecord {
  return { task: r.task, instruction: r.instruction, input: r.input };
}

/**
 * A record's prompt as one string (its instruction and input): the key that keeps held-out prompts
 * (evaluation, flashbacks, probes) out of generated training data.
 * @param r - a record.
 * @returns the key.
 * @example
 * ```ts
 * promptKey({ instruction: 'Add.', input: '2 3' }); // 'Add.\n2 3' (a whole record does as well)
 * ```
 */
export function promptKey(r: { instruction: string; input: string }): string {
  return `${r.instruction}\n${r.input}`;
}

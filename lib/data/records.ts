// The record shapes of DESIGN.md's "Data" contract, shared by the generators, JSONL I/O and metrics.

/** A new-task training/eval instance; old-task eval records also carry `answer`. */
export interface InstanceRecord {
  task: string;
  instruction: string;
  input: string;
  output: string;
  answer?: string;
  /** The published format an importer read the record from (`jfa eval --metric auto` scores by it). */
  format?: string;
  embedding?: number[];
}

/** An old-task record as the generators make it: always scoreable by its `answer`. */
export interface OldRecord extends InstanceRecord {
  answer: string;
}

/** A flashback: a prompt from an old task, without a target. */
export type FlashbackRecord =
  | { task: string; instruction: string; input: string; embedding?: number[] }
  | { task: string; prompt: string; embedding?: number[] };

export function toFlashback(r: InstanceRecord): FlashbackRecord {
  return { task: r.task, instruction: r.instruction, input: r.input };
}

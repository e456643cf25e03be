// The results schema: what a demo, a study and continual rounds write to results.json and
// report.html reads back, in one place.
import { z } from 'zod';

import { CONTINUE_MODES } from '../jfa/continual.js';

/** The scores of one model: one run of a method, or the mean over its runs. */
interface Scores {
  old: Record<string, number>;
  /** held-out (unseen) new tasks */
  newRougeL: number;
  newExactMatch: number;
  /** seen new tasks on fresh inputs, when evaluated */
  seenRougeL?: number;
  /** base accuracy minus this model's, averaged over the old suites */
  forgetting: number;
  /** held-out ROUGE-L per new-task family (each run's predictions.jsonl has every answer) */
  families?: Record<string, number>;
}

/** One run (one seed) of a method. */
export interface RunResult extends Scores {
  seed: number;
  trainSeconds: number;
  steps: number;
  tokensPerSecond: number;
  curve: Array<{ step: number; sft: number; divergence: number }>;
  examples?: Array<{ input: string; reference: string; prediction: string }>;
}

/** A method's scores: means over its runs, their sample standard deviations, and the runs. */
export interface MethodResult extends Scores {
  method: string;
  label: string;
  /** standard deviations over seeds (present with two or more runs) */
  sd?: { old: Record<string, number>; oldAverage: number; newRougeL: number; newExactMatch: number; seenRougeL?: number; forgetting: number };
  runs?: RunResult[];
  trainSeconds?: number;
  steps?: number;
  tokensPerSecond?: number;
  /** the first run's training curve */
  curve?: RunResult['curve'];
  examples?: RunResult['examples'];
}

/** results.json of a demo, study or rounds run. */
export interface DemoResults {
  out: string;
  seed: number;
  seeds: number;
  wallSeconds: number;
  base: { dir: string; parameters: number; pretrainSeconds: number; cached: boolean; sha256: string; scores?: Record<string, number> };
  data: { newTrainRecords: number; newEvalRecords: number; oldEvalPerSuite: number; flashbacks: number };
  suites: string[];
  methods: MethodResult[];
  options: unknown;
  runtime: { torchVersion: string; threads: number };
  /** a study's swept values, one per row after the base's */
  points?: Array<{ label: string; x?: number }>;
  /** `jfa demo --rounds`: the accuracy matrices, BWT and forgetting (methods then hold the last round's scores) */
  rounds?: RoundsResult;
}

const score = z.number();
const matrix = z.array(z.array(score.nullable()));
const roundRunSchema = z
  .object({
    seed: z.number().int(),
    /** R[i][j]: held-out ROUGE-L on round j+1's tasks after training round i+1; null above the diagonal */
    matrix,
    /** accuracy per old suite after each round */
    old: z.array(z.record(z.string(), score)),
    /** exact match on round j's tasks after round i (as matrix) */
    exactMatch: matrix,
    bwt: score,
    forgetting: score,
    oldForgetting: score,
    trainSeconds: z.array(score),
  })
  .strict();
const roundMethodSchema = z
  .object({
    method: z.string(),
    label: z.string(),
    /** mean over seeds */
    matrix,
    /** old-suite average after each round (mean over seeds) */
    old: z.array(score),
    bwt: score,
    forgetting: score,
    /** old suites: max over the base and the rounds before the last, minus after the last (mean over seeds) */
    oldForgetting: score,
    sd: z.object({ bwt: score, forgetting: score, oldForgetting: score }).strict().optional(),
    runs: z.array(roundRunSchema),
  })
  .strict();
/** results.json's `rounds` section. */
export const roundsSchema = z
  .object({
    count: z.number().int().min(2),
    mode: z.enum(CONTINUE_MODES),
    flashbackBudget: z.number().int().nonnegative(),
    split: z.array(z.object({ round: z.number().int(), families: z.array(z.string()), trainRecords: z.number().int(), evalRecords: z.number().int() }).strict()),
    /** the base model before any round: held-out ROUGE-L on each round's tasks, and its old-suite average */
    base: z.object({ tasks: z.array(score), old: score }).strict(),
    methods: z.array(roundMethodSchema),
  })
  .strict();
export type RoundsResult = z.infer<typeof roundsSchema>;
/** One seed of one method's continual rounds. */
export type RoundRun = z.infer<typeof roundRunSchema>;

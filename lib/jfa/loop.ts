// The loop both train() and pretrain() run: build a step's micro-batches, set the learning rate,
// run the native step (off the main thread), free the batches, report progress, hand the step to
// the caller (metrics, checkpoints, then its onStep, awaited), and yield to the event loop between
// steps. A cancelled signal or a failed onStep ends the loop at a step boundary with a coded error.
import { setImmediate as tick } from 'node:timers/promises';

import { CallbackError, throwIfAborted } from '../errors.js';
import { type LlamaModel } from '../model/llama.js';
import { type AdamW } from '../optim.js';
import { type MicroBatch, type StepOptions, type StepResult, trainStep } from './step.js';

/** What a training loop reports after each step (train's and pretrain's onStep). */
export interface StepProgress extends StepResult {
  /** steps done, 1-based */
  step: number;
  /** steps the run will take */
  totalSteps: number;
  /** the learning rate the step used */
  lr: number;
  /** tokens trained on so far in this run */
  tokens: number;
  /** tokens per second so far */
  tokensPerSecond: number;
  /** milliseconds since the run started */
  elapsedMs: number;
}

/** A step's micro-batches and how many tokens they hold. */
type Batches = { micro: MicroBatch[]; tokens: number };

export interface StepLoop {
  model: LlamaModel;
  optimizer: AdamW;
  /** the first step to run (0-based; a resumed run starts where its checkpoint ended) */
  from: number;
  /** run steps while step < to */
  to: number;
  totalSteps: number;
  /** the learning rate of a step */
  lr: (step: number) => number;
  /**
   * A step's micro-batches and how many tokens they hold. Their ids, masks, targets and latent
   * tensors are freed after the step; kept reference tensors are the caller's. A promise where the
   * records come from a stream (awaited only then: an array run's batches are built synchronously).
   */
  batches: (step: number) => Batches | Promise<Batches>;
  options: (step: number) => StepOptions;
  /** the caller's callback, after `after`; awaited; a throw or rejection becomes a CallbackError */
  onStep?: (p: StepProgress) => unknown;
  /** after each step, with the step count done so far (metrics files, evaluations, checkpoints); awaited when it returns a promise */
  after?: (p: StepProgress) => void | Promise<void>;
  /** checked after each step (after onStep): true ends the loop there, as a finished run (train's forgetting guard) */
  done?: () => boolean;
  /** checked before each step: an aborted signal ends the loop with an AbortError */
  signal?: AbortSignal;
  /** what the errors call the work ('train', 'pretrain') */
  what?: string;
  /** awaited after each step, before the next (measurements that need the weights as they are) */
  between?: () => Promise<void>;
}

/** Runs steps [from, to); returns the step reached and the tokens trained on. */
export async function runSteps(l: StepLoop): Promise<{ step: number; tokens: number; elapsedMs: number }> {
  const started = performance.now();
  let tokens = 0;
  let step = l.from;
  const what = l.what ?? 'train';
  while (step < l.to && !l.done?.()) {
    // At a step boundary: the weights, moments and `after`'s files all describe `step`.
    throwIfAborted(l.signal, `${what}: stopped at step ${step} of ${l.totalSteps}`);
    const made = l.batches(step);
    const { micro, tokens: n } = made instanceof Promise ? await made : made;
    tokens += n;
    l.optimizer.lr = l.lr(step);
    let r: StepResult;
    try {
      r = await trainStep(l.model, l.optimizer, micro, l.options(step));
    } finally {
      for (const mb of micro) for (const t of [mb.ids, mb.attentionMask, mb.targets, mb.latent?.indices, mb.latent?.weights]) t?.dispose();
    }
    step += 1;
    const elapsedMs = performance.now() - started;
    const progress: StepProgress = { step, totalSteps: l.totalSteps, ...r, lr: l.optimizer.lr, tokens, tokensPerSecond: tokens / (elapsedMs / 1000), elapsedMs };
    const after = l.after?.(progress);
    if (after) await after;
    if (l.onStep) {
      try {
        await l.onStep(progress);
      } catch (e) {
        throw new CallbackError(`${what}: onStep failed after step ${step}: ${(e as Error)?.message ?? String(e)}`, step, { cause: e });
      }
    }
    await l.between?.();
    await tick(); // timers and I/O callbacks run between steps too
  }
  return { step, tokens, elapsedMs: performance.now() - started };
}

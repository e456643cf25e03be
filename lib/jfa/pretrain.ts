// Pretraining a base model from scratch (every weight trained, cross-entropy on the outputs): the
// demo's stand-in for an off-the-shelf aligned model that is good at the old tasks.
import { createRng, hashString } from '../data/rng.js';
import { type InstanceRecord } from '../data/records.js';
import { type LlamaModel } from '../model/llama.js';
import { type Tokenizer } from '../model/tokenizer.js';
import { AdamW, cosineWithWarmup } from '../optim.js';
import { sftBatch } from './examples.js';
import { runSteps, type StepProgress } from './loop.js';
import { type MicroBatch } from './step.js';

/** Options of {@link pretrain}. */
export interface PretrainOptions {
  /** passes over the records (default 1) */
  epochs?: number;
  /** records per micro-batch (default 8) */
  microBatch?: number;
  /** micro-batches per optimisation step (default 1) */
  accumulation?: number;
  /** the longest tokenized record (default 256) */
  maxTokens?: number;
  /** peak learning rate (default 3e-3) */
  lr?: number;
  /** share of the steps spent warming up (default 0.05) */
  warmupRatio?: number;
  /** seed of the record order (default 0) */
  seed?: number;
  /** train on every token, prompt included (language modelling), not only on the outputs */
  promptLoss?: boolean;
  /** called after each step */
  onStep?: (p: StepProgress) => void;
}

/**
 * Trains all of `model`'s weights on `records` in place; they are frozen again at the end.
 * @param model - the model (e.g. from {@link createModel}).
 * @param tokenizer - its tokenizer.
 * @param records - training records.
 * @param o - epochs, batch sizes, learning rate, seed, progress.
 * @returns a promise of the steps run, tokens trained on and milliseconds taken.
 * @throws (rejects with) RangeError when there are no records.
 * @example
 * ```ts
 * const { steps } = await pretrain(model, tokenizer, suite.oldTrain, { epochs: 2, onStep: (p) => console.log(p.step, p.sft) });
 * model.save('base');
 * ```
 */
export async function pretrain(model: LlamaModel, tokenizer: Tokenizer, records: InstanceRecord[], o: PretrainOptions = {}): Promise<{ steps: number; tokens: number; elapsedMs: number }> {
  if (records.length === 0) throw new RangeError('pretrain: no records');
  const microBatch = o.microBatch ?? 8;
  const accumulation = o.accumulation ?? 1;
  const perStep = microBatch * accumulation;
  const stepsPerEpoch = Math.ceil(records.length / perStep);
  const totalSteps = stepsPerEpoch * (o.epochs ?? 1);
  const warmup = Math.round(totalSteps * (o.warmupRatio ?? 0.05));
  const lr = o.lr ?? 3e-3;
  model.setBaseTrainable(true);
  const weights = Object.values(model.weights());
  const optimizer = new AdamW(weights, { lr, weightDecay: 0.01 });
  const lengths = records.map((r) => r.instruction.length + r.input.length + r.output.length);
  let order = { epoch: -1, order: [] as number[] };
  try {
    const r = await runSteps({
      model,
      optimizer,
      from: 0,
      to: totalSteps,
      totalSteps,
      lr: (step) => lr * cosineWithWarmup(step, warmup, totalSteps),
      batches: (step) => {
        const epoch = Math.floor(step / stepsPerEpoch);
        if (epoch !== order.epoch) order = { epoch, order: lengthBucketed(records, lengths, perStep, o.seed ?? 0, epoch) };
        const start = (step % stepsPerEpoch) * perStep;
        const micro: MicroBatch[] = [];
        let tokens = 0;
        for (let m = 0; m < accumulation; m++) {
          const idx = order.order.slice(start + m * microBatch, start + (m + 1) * microBatch);
          if (!idx.length) break;
          const b = sftBatch(tokenizer, idx.map((i) => records[i]!), o.maxTokens ?? 256, { promptLoss: o.promptLoss });
          tokens += b.tokens;
          micro.push({ kind: 'new', ids: b.ids, attentionMask: b.attentionMask, targets: b.targets });
        }
        return { micro, tokens };
      },
      options: () => ({ method: 'sft', maxGradNorm: 1.0 }),
      onStep: o.onStep,
    });
    return { steps: r.step, tokens: r.tokens, elapsedMs: r.elapsedMs };
  } finally {
    optimizer.dispose();
    weights.forEach((w) => w.dispose());
    model.setBaseTrainable(false);
  }
}

/**
 * An epoch's order: shuffled, then sorted by length within windows of 16 steps and cut into
 * steps whose order is shuffled again. Batches of similar lengths waste little compute on
 * padding (about a quarter of it on the generated suites), and every record still comes once.
 */
export function lengthBucketed(records: InstanceRecord[], lengths: number[], perStep: number, seed: number, epoch: number): number[] {
  const rng = createRng(hashString(`${seed}:pretrain:${epoch}`));
  const order = rng.shuffle(records.map((_, i) => i));
  const window = perStep * 16;
  const steps: number[][] = [];
  for (let w = 0; w < order.length; w += window) {
    const chunk = order.slice(w, w + window).sort((a, b) => lengths[a]! - lengths[b]! || a - b);
    for (let s = 0; s < chunk.length; s += perStep) steps.push(chunk.slice(s, s + perStep));
  }
  // the last (possibly short) step stays last, so every other step is full
  const last = order.length % perStep === 0 ? [] : [steps.pop()!];
  return [...rng.shuffle(steps), ...last].flat();
}

// One optimisation step of the trainer over an accumulation window of micro-batches:
// new-task micro-batches contribute token cross-entropy (SFT); flashback micro-batches contribute
// alpha x the divergence between the model and its reference (the same model with adapters and
// latent increments off, run without gradients, and only for flashbacks). Each micro-batch's
// gradient is kept apart; PCGrad (or a plain mean) combines them; then clipping and AdamW.
import { flashbackDivergence, type KlKind, pcgrad, type Reduction, tokenCrossEntropy } from '../kernels.js';
import { type LlamaModel } from '../model/llama.js';
import { clipGradNorm, type AdamW } from '../optim.js';
import { add, scope, type Tensor, tensor, zeros } from '../tensor.js';

export type Method = 'sft' | 'flashback' | 'jfa';

export interface MicroBatch {
  kind: 'new' | 'flashback';
  ids: Tensor;
  attentionMask: Tensor;
  /** new-task micro-batches: next-token targets, -100 where nothing is predicted */
  targets?: Tensor;
  /**
   * flashback micro-batches: the reference's final hidden states (adapters and latent tasks off)
   * for these ids, when the caller keeps them (the base is frozen, so they never change); computed
   * here when absent
   */
  referenceHidden?: Tensor;
  /**
   * flashback micro-batches: the reference's logits (b, t, vocab) for these ids, when the caller
   * keeps them; the LM head then does not run for the reference either (takes precedence over
   * referenceHidden)
   */
  referenceLogits?: Tensor;
  /** latent tasks of each sample (jfa with latent tasks) */
  latent?: { indices: Tensor; weights: Tensor };
}

export interface StepOptions {
  method: Method;
  /** weight of the divergence (default 1) */
  alpha?: number;
  kl?: KlKind;
  reduction?: Reduction;
  /** combine micro-batch gradients with PCGrad (jfa's default) instead of their mean */
  pcgrad?: boolean;
  maxGradNorm?: number;
  /** seed of PCGrad's visiting orders for this step */
  seed?: number;
  /**
   * jfa: weight of an extra SFT loss with the latent increments off, on new-task micro-batches
   * that carry increments, so that the adapter also learns to serve alone (default 0: none)
   */
  plainSftWeight?: number;
  /** When given, the milliseconds spent in each phase of the step are added to it (benchmarks). */
  timings?: StepTimings;
}

/** Milliseconds per phase of trainStep, accumulated over calls; `total` is the whole call. */
export interface StepTimings {
  /** the trained model's forward passes */
  forward: number;
  /** the reference forward passes (flashbacks) */
  refForward: number;
  /** the fused loss kernels (value and gradient of the logits) and reading the loss back */
  loss: number;
  backward: number;
  /** reading each micro-batch's gradients apart, dropping them from the parameters, freeing the graph */
  gradCollect: number;
  /** PCGrad (or the mean) and setting the combined gradients */
  projection: number;
  clip: number;
  optimizer: number;
  total: number;
}

export function stepTimings(): StepTimings {
  return { forward: 0, refForward: 0, loss: 0, backward: 0, gradCollect: 0, projection: 0, clip: 0, optimizer: 0, total: 0 };
}

export interface StepResult {
  sft: number;
  /** mean of the plain (latent off) SFT loss where plainSftWeight added it, else 0 */
  plainSft: number;
  divergence: number;
  gradNorm: number;
  conflicts: number;
}

const scalar = (t: Tensor) => (t.toTypedArray() as Float32Array)[0]!;

/** The flattened positions (b * t + i) that have a target (not -100), and those targets. */
function targetRows(targets: Tensor): { rows: Tensor; ids: Tensor } {
  const all = targets.toTypedArray() as BigInt64Array;
  let n = 0;
  for (const t of all) if (t !== -100n) n++;
  const rows = new BigInt64Array(n);
  const ids = new BigInt64Array(n);
  let j = 0;
  all.forEach((t, i) => {
    if (t !== -100n) {
      rows[j] = BigInt(i);
      ids[j++] = t;
    }
  });
  return { rows: tensor(rows, [n]), ids: tensor(ids, [n]) };
}

/** Runs one step: every micro-batch forward and backward, combine, clip, optimizer.step(). */
export function trainStep(model: LlamaModel, optimizer: AdamW, micro: MicroBatch[], o: StepOptions): StepResult {
  const timings = o.timings;
  const started = timings ? performance.now() : 0;
  let clock = started;
  // Without timings: one undefined check per phase.
  const lap = timings
    ? (phase: Exclude<keyof StepTimings, 'total'>) => {
        const now = performance.now();
        timings[phase] += now - clock;
        clock = now;
      }
    : undefined;
  const params = optimizer.params;
  const alpha = o.alpha ?? 1;
  const perBatch: Tensor[][] = [];
  const plainWeight = o.plainSftWeight ?? 0;
  let sft = 0;
  let plainSft = 0;
  let divergence = 0;
  let sftBatches = 0;
  let plainBatches = 0;
  let divBatches = 0;
  for (const mb of micro) {
    if (mb.kind === 'flashback' && o.method === 'sft') continue;
    scope(() => {
      const latent = o.method === 'jfa' ? mb.latent : undefined;
      let loss: Tensor;
      if (mb.kind === 'new') {
        if (!mb.targets) throw new TypeError('trainStep: a new-task micro-batch needs targets');
        // Only the positions with a target are scored: the LM head runs on those rows alone.
        const { rows, ids } = targetRows(mb.targets);
        const hidden = model.hiddenStates(mb.ids, { attentionMask: mb.attentionMask, latent });
        const logits = model.head(hidden, { rows });
        lap?.('forward');
        loss = tokenCrossEntropy(logits, ids);
        sft += scalar(loss);
        sftBatches += 1;
        if (latent && plainWeight > 0) {
          const plain = tokenCrossEntropy(model.head(model.hiddenStates(mb.ids, { attentionMask: mb.attentionMask }), { rows }), ids);
          plainSft += scalar(plain);
          plainBatches += 1;
          loss = add(loss, plain, plainWeight);
          lap?.('forward');
        }
      } else {
        const logits = model.logits(mb.ids, { attentionMask: mb.attentionMask, latent });
        lap?.('forward');
        const ref =
          mb.referenceLogits ??
          (mb.referenceHidden ? model.head(mb.referenceHidden) : model.logits(mb.ids, { attentionMask: mb.attentionMask, adapters: false }));
        lap?.('refForward');
        const div = flashbackDivergence(logits, ref, mb.attentionMask, { kind: o.kl, reduction: o.reduction });
        divergence += scalar(div);
        divBatches += 1;
        loss = alpha === 1 ? div : add(zeros([]), div, alpha);
      }
      lap?.('loss');
      loss.backward();
      lap?.('backward');
    });
    // This micro-batch's gradient, kept apart; a parameter it did not reach gets zeros.
    perBatch.push(params.map((p) => p.grad ?? zeros(p.shape, p.dtype)));
    for (const p of params) p.zeroGrad();
    lap?.('gradCollect');
  }
  if (perBatch.length === 0) throw new RangeError('trainStep: no micro-batch applies to this method');

  let conflicts = 0;
  let combined: Tensor[];
  if (o.pcgrad && perBatch.length > 1) {
    const r = pcgrad(perBatch, { seed: o.seed ?? 0 });
    combined = r.grads;
    conflicts = r.conflicts;
  } else {
    combined = params.map((p, i) => perBatch.reduce((acc, g) => add(acc, g[i]!, 1 / perBatch.length), zeros(p.shape, p.dtype)));
  }
  perBatch.flat().forEach((g) => g.dispose());
  params.forEach((p, i) => p.setGrad(combined[i]));
  combined.forEach((g) => g.dispose());
  lap?.('projection');
  const gradNorm = clipGradNorm(params, o.maxGradNorm ?? 1.0);
  lap?.('clip');
  optimizer.step();
  optimizer.zeroGrad();
  if (timings) {
    lap!('optimizer');
    timings.total += clock - started;
  }
  return {
    sft: sftBatches ? sft / sftBatches : 0,
    plainSft: plainBatches ? plainSft / plainBatches : 0,
    divergence: divBatches ? divergence / divBatches : 0,
    gradNorm,
    conflicts,
  };
}

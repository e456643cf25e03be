// `jfa study`: the paper's sweeps on the demo's benchmark (its Figures 4-5 and ablation table):
// flashbacks per old suite, the divergence weight alpha, the latent pool's shape, and PCGrad. Each
// point trains JFA from the same base for every seed; the table and report.html show mean ± sd per
// point, results.json every run.
import { join, resolve } from 'node:path';

import { z } from 'zod';

import { type Method } from '../jfa/methods.js';
import { inOutputFolder, writeFileAtomic } from '../util/files.js';
import { BENCH_KEEP, baseRow, benchSummary, demoSchema, formatTable, prepareBench, runOnce, type RunOverrides } from './demo.js';
import { aggregate, renderReport } from './report.js';
import { type DemoResults, type MethodResult, type RunResult } from './results.js';

export const STUDIES = ['flashbacks', 'alpha', 'latent', 'latent-mode', 'pcgrad'] as const;
export type StudyName = (typeof STUDIES)[number];

interface Point {
  /** the row's label, e.g. "alpha 0.3" */
  label: string;
  /** the swept value, for the curve (numeric studies) */
  x?: number;
  method: Method;
  overrides: RunOverrides;
}

/** The points of each study: the paper's values where it gives them. */
export function studyPoints(study: StudyName): Point[] {
  switch (study) {
    case 'flashbacks':
      // 0 flashbacks leaves nothing to hold the old outputs with: the point is plain SFT.
      return [0, 5, 10, 20, 32].map((n) => ({ label: `${n} flashbacks per suite`, x: n, method: 'jfa', overrides: { flashbacksPerSuite: n } }));
    case 'alpha':
      return [0.1, 0.3, 1, 3, 10].map((a) => ({ label: `alpha ${a}`, x: a, method: 'jfa', overrides: { alpha: a } }));
    case 'latent':
      return [
        { label: 'no latent tasks', method: 'jfa-no-latent', overrides: {} },
        ...([[4, 4, 1], [8, 8, 2], [16, 24, 2], [16, 24, 4], [32, 24, 2]] as const).map(([c, q, k]) => ({ label: `C ${c}, Q ${q}, k ${k}`, method: 'jfa' as const, overrides: { groups: c, perGroup: q, k } })),
      ];
    case 'latent-mode':
      // How the adapter serves after joint training: with the retrieved increments, or alone after
      // latent dropout with probability p (and p 0.5 with a plain-adapter SFT term).
      return [
        { label: 'no latent tasks', method: 'jfa-no-latent', overrides: {} },
        { label: 'retrieve', method: 'jfa-retrieve', overrides: {} },
        ...[0.25, 0.5, 0.75].map((p) => ({ label: `drop p ${p}`, method: 'jfa-drop' as const, overrides: { latentDropout: p } })),
        { label: 'drop p 0.5 + plain SFT 0.5', method: 'jfa-drop', overrides: { latentDropout: 0.5, plainSftWeight: 0.5 } },
      ];
    case 'pcgrad':
      return [
        { label: 'PCGrad', method: 'jfa', overrides: { pcgrad: true } },
        { label: 'mean of gradients', method: 'jfa', overrides: { pcgrad: false } },
      ];
  }
}

export const studySchema = demoSchema.extend({ study: z.enum(STUDIES), out: z.string().optional() });
export type StudyOptions = z.infer<typeof studySchema>;

export interface StudyResults extends DemoResults {
  study: StudyName;
}

export async function runStudy(options: StudyOptions): Promise<StudyResults> {
  const { study, ...rest } = options;
  const o = { ...rest, out: rest.out ?? `jfa-study-${study}` };
  return inOutputFolder(resolve(o.out), 'study', BENCH_KEEP, () => studyIn(study, o));
}

async function studyIn(study: StudyName, o: Omit<StudyOptions, 'study'> & { out: string }): Promise<StudyResults> {
  const started = performance.now();
  const b = await prepareBench(o, `jfa study ${study}`);
  const points = studyPoints(study);
  const rows: MethodResult[] = [baseRow(b)];
  for (const [i, p] of points.entries()) {
    const runs: RunResult[] = [];
    for (let s = 0; s < o.seeds; s++) {
      const seed = o.seed + s;
      runs.push(await runOnce(b, p.method, seed, join(b.out, 'runs', `point${i}-seed${seed}`), `${p.label} (seed ${seed})`, p.overrides));
    }
    rows.push(aggregate(`point${i}`, p.label, runs));
  }
  const results: StudyResults = { ...benchSummary(b, started), methods: rows, study, points: points.map(({ label, x }) => ({ label, x })) };
  writeFileAtomic(join(b.out, 'results.json'), `${JSON.stringify(results, null, 2)}\n`);
  writeFileAtomic(join(b.out, 'report.html'), renderReport(results, `study: ${study}`));
  if (o.json) console.log(JSON.stringify(results));
  else console.log(formatTable(results));
  return results;
}

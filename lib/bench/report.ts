// report.html for `jfa demo`: one self-contained page (inline SVG, no scripts, nothing fetched)
// with the results table, old-task accuracy per suite and method, and the training loss curves;
// with continual rounds, each method's accuracy matrix as a heat map (a table whose cells hold the
// numbers, coloured by value).
import { type DemoResults, type MethodResult, type RunResult } from './results.js';
import { mean, sd } from './statistics.js';

const COLORS = ['#888888', '#d62728', '#ff7f0e', '#1f77b4', '#2ca02c', '#9467bd', '#8c564b'];
const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
/** A score in percent, one decimal. */
export const pct = (x: number): string => (100 * x).toFixed(1);

/** Mean accuracy over the old suites. */
export function oldAverage(m: Pick<MethodResult, 'old'>): number {
  return mean(Object.values(m.old));
}

/** A method's result from its runs: means, and with two or more runs their standard deviations. */
export function aggregate(method: string, label: string, runs: RunResult[]): MethodResult {
  if (runs.length === 0) throw new RangeError(`aggregate: no runs of ${method}`);
  const suites = Object.keys(runs[0]!.old);
  const of = (f: (r: RunResult) => number) => runs.map(f);
  const result: MethodResult = {
    method,
    label,
    old: Object.fromEntries(suites.map((s) => [s, mean(of((r) => r.old[s]!))])),
    newRougeL: mean(of((r) => r.newRougeL)),
    newExactMatch: mean(of((r) => r.newExactMatch)),
    ...(runs[0]!.seenRougeL === undefined ? {} : { seenRougeL: mean(of((r) => r.seenRougeL!)) }),
    forgetting: mean(of((r) => r.forgetting)),
    ...(runs[0]!.families === undefined ? {} : { families: Object.fromEntries(Object.keys(runs[0]!.families).map((f) => [f, mean(of((r) => r.families?.[f] ?? 0))])) }),
    runs,
    trainSeconds: mean(of((r) => r.trainSeconds)),
    steps: runs[0]!.steps,
    tokensPerSecond: mean(of((r) => r.tokensPerSecond)),
    curve: runs[0]!.curve,
    examples: runs[0]!.examples,
  };
  if (runs.length > 1)
    result.sd = {
      old: Object.fromEntries(suites.map((s) => [s, sd(of((r) => r.old[s]!))])),
      oldAverage: sd(of(oldAverage)),
      newRougeL: sd(of((r) => r.newRougeL)),
      newExactMatch: sd(of((r) => r.newExactMatch)),
      ...(runs[0]!.seenRougeL === undefined ? {} : { seenRougeL: sd(of((r) => r.seenRougeL!)) }),
      forgetting: sd(of((r) => r.forgetting)),
    };
  return result;
}

/** The results table, as the console and report.html both show it: a header and one row per method (mean ± sd over seeds). */
export function resultTable(r: DemoResults): { head: string[]; rows: string[][] } {
  const seen = r.methods.some((m) => m.seenRougeL !== undefined);
  const head = ['method', 'new ROUGE-L', 'new EM', ...(seen ? ['seen ROUGE-L'] : []), ...r.suites, 'old avg', 'forgetting', 'steps', 'train s', 'tokens/s'];
  const cell = (v: number, spread?: number) => (spread === undefined ? pct(v) : `${pct(v)} ± ${pct(spread)}`);
  const rows = r.methods.map((m) => [
    m.label,
    cell(m.newRougeL, m.sd?.newRougeL),
    cell(m.newExactMatch, m.sd?.newExactMatch),
    ...(seen ? [m.seenRougeL === undefined ? '-' : cell(m.seenRougeL, m.sd?.seenRougeL)] : []),
    ...r.suites.map((s) => cell(m.old[s] ?? 0, m.sd?.old[s])),
    cell(oldAverage(m), m.sd?.oldAverage),
    m.method === 'base' ? '-' : cell(m.forgetting, m.sd?.forgetting),
    m.steps?.toString() ?? '-',
    m.trainSeconds?.toFixed(0) ?? '-',
    m.tokensPerSecond?.toFixed(0) ?? '-',
  ]);
  return { head, rows };
}

/** Every run as a point (forgetting, new-task ROUGE-L), one colour per method, the mean as a ring: the spread over seeds at a glance. */
function seedChart(r: DemoResults): string {
  const trained = r.methods.filter((m) => m.runs?.length);
  const points = trained.flatMap((m) => m.runs!.map((run) => [run.forgetting, run.newRougeL]));
  if (points.length === 0) return '<p>(no runs)</p>';
  const [w, h, left, bottom, top] = [760, 320, 50, 40, 20];
  const xs = points.map((p) => p[0]!);
  const [xLo, xHi] = [Math.min(0, ...xs), Math.max(...xs, 0.01)];
  const x = (v: number) => left + ((w - left - 180) * (v - xLo)) / (xHi - xLo);
  const y = (v: number) => top + (h - top - bottom) * (1 - v);
  const parts: string[] = [];
  for (const t of [0, 0.25, 0.5, 0.75, 1])
    parts.push(`<line x1="${left}" x2="${w - 180}" y1="${y(t)}" y2="${y(t)}" stroke="#ddd"/><text x="${left - 4}" y="${y(t) + 4}" text-anchor="end" font-size="11">${t * 100}</text>`);
  parts.push(`<text x="${left}" y="${h - 8}" font-size="11">forgetting ${pct(xLo)}</text><text x="${w - 180}" y="${h - 8}" text-anchor="end" font-size="11">${pct(xHi)} (points)</text>`);
  parts.push(`<text x="8" y="${top - 6}" font-size="11">new-task ROUGE-L</text>`);
  trained.forEach((m) => {
    const color = COLORS[r.methods.indexOf(m) % COLORS.length]!;
    for (const run of m.runs!)
      parts.push(`<circle cx="${x(run.forgetting).toFixed(1)}" cy="${y(run.newRougeL).toFixed(1)}" r="4" fill="${color}"><title>${esc(m.label)} seed ${run.seed}: forgetting ${pct(run.forgetting)}, ROUGE-L ${pct(run.newRougeL)}</title></circle>`);
    parts.push(`<circle cx="${x(m.forgetting).toFixed(1)}" cy="${y(m.newRougeL).toFixed(1)}" r="8" fill="none" stroke="${color}" stroke-width="2"/>`);
  });
  return svg(w, h, parts, legend(trained.map((m) => m.label), w - 170, top, trained.map((m) => COLORS[r.methods.indexOf(m) % COLORS.length]!)));
}

function barChart(r: DemoResults): string {
  const groups = [...r.suites, 'average'];
  const [w, h, left, bottom, top] = [760, 300, 40, 40, 20];
  const gw = (w - left) / groups.length;
  const bw = (gw * 0.8) / r.methods.length;
  const y = (v: number) => top + (h - top - bottom) * (1 - v);
  const parts: string[] = [];
  for (const t of [0, 0.25, 0.5, 0.75, 1])
    parts.push(`<line x1="${left}" x2="${w}" y1="${y(t)}" y2="${y(t)}" stroke="#ddd"/><text x="${left - 4}" y="${y(t) + 4}" text-anchor="end" font-size="11">${t * 100}</text>`);
  groups.forEach((g, gi) => {
    r.methods.forEach((m, mi) => {
      const v = g === 'average' ? oldAverage(m) : (m.old[g] ?? 0);
      const x = left + gi * gw + gw * 0.1 + mi * bw;
      parts.push(`<rect x="${x.toFixed(1)}" y="${y(v).toFixed(1)}" width="${(bw - 1).toFixed(1)}" height="${(y(0) - y(v)).toFixed(1)}" fill="${COLORS[mi % COLORS.length]}"><title>${esc(m.label)} ${esc(g)}: ${pct(v)}%</title></rect>`);
    });
    parts.push(`<text x="${left + gi * gw + gw / 2}" y="${h - bottom + 16}" text-anchor="middle" font-size="12">${esc(g)}</text>`);
  });
  return svg(w, h, parts, legend(r.methods.map((m) => m.label), w - 150, top));
}

function lineChart(series: Array<{ label: string; color: string; points: Array<[number, number]> }>, yLabel: string): string {
  const [w, h, left, bottom, top] = [760, 260, 50, 30, 20];
  const all = series.flatMap((s) => s.points);
  if (all.length === 0) return '<p>(no steps)</p>';
  const xMax = Math.max(...all.map((p) => p[0]), 1);
  const yMax = Math.max(...all.map((p) => p[1]), 1e-9) * 1.05;
  const x = (v: number) => left + ((w - left - 10) * v) / xMax;
  const y = (v: number) => top + (h - top - bottom) * (1 - v / yMax);
  const parts: string[] = [];
  for (let i = 0; i <= 4; i++) {
    const v = (yMax * i) / 4;
    parts.push(`<line x1="${left}" x2="${w - 10}" y1="${y(v)}" y2="${y(v)}" stroke="#ddd"/><text x="${left - 4}" y="${y(v) + 4}" text-anchor="end" font-size="11">${v.toPrecision(2)}</text>`);
  }
  parts.push(`<text x="${left}" y="${h - 6}" font-size="11">step 0</text><text x="${w - 10}" y="${h - 6}" text-anchor="end" font-size="11">${xMax}</text>`);
  parts.push(`<text x="8" y="${top - 6}" font-size="11">${esc(yLabel)}</text>`);
  for (const s of series) {
    // a running mean over 5 steps keeps the curve readable
    const smooth = s.points.map((p, i) => {
      const window = s.points.slice(Math.max(0, i - 4), i + 1);
      return [p[0], window.reduce((a, q) => a + q[1], 0) / window.length] as const;
    });
    parts.push(`<polyline fill="none" stroke="${s.color}" stroke-width="1.5" points="${smooth.map(([a, b]) => `${x(a).toFixed(1)},${y(b).toFixed(1)}`).join(' ')}"/>`);
  }
  return svg(w, h, parts, legend(series.map((s) => s.label), w - 170, top, series.map((s) => s.color)));
}

function legend(labels: string[], x: number, y: number, colors = COLORS): string {
  return labels.map((l, i) => `<rect x="${x}" y="${y + i * 16}" width="10" height="10" fill="${colors[i % colors.length]}"/><text x="${x + 14}" y="${y + i * 16 + 9}" font-size="11">${esc(l)}</text>`).join('');
}

const svg = (w: number, h: number, parts: string[], extra: string) =>
  `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}" font-family="sans-serif">${parts.join('')}${extra}</svg>`;

/** A study's curves: new-task ROUGE-L and forgetting against the swept value, ± sd as whiskers. */
function studyChart(r: DemoResults): string {
  const rows = r.methods.slice(1);
  const xs = r.points?.map((p) => p.x);
  if (!xs || xs.some((x) => x === undefined) || rows.length !== xs.length) return '';
  const log = Math.min(...(xs as number[])) > 0 && Math.max(...(xs as number[])) / Math.min(...(xs as number[])) >= 20;
  const tx = (v: number) => (log ? Math.log10(v) : v);
  const [lo, hi] = [Math.min(...xs.map((v) => tx(v!))), Math.max(...xs.map((v) => tx(v!)))];
  const [w, h, left, bottom, top] = [760, 300, 50, 40, 20];
  const x = (v: number) => left + ((w - left - 180) * (tx(v) - lo)) / (hi - lo || 1);
  const y = (v: number) => top + (h - top - bottom) * (1 - v);
  const parts: string[] = [];
  for (const t of [0, 0.25, 0.5, 0.75, 1])
    parts.push(`<line x1="${left}" x2="${w - 180}" y1="${y(t)}" y2="${y(t)}" stroke="#ddd"/><text x="${left - 4}" y="${y(t) + 4}" text-anchor="end" font-size="11">${t * 100}</text>`);
  xs.forEach((v) => parts.push(`<text x="${x(v!)}" y="${h - bottom + 16}" text-anchor="middle" font-size="11">${v}</text>`));
  const series = [
    { label: 'new-task ROUGE-L', color: COLORS[3]!, value: (m: MethodResult) => [m.newRougeL, m.sd?.newRougeL ?? 0] },
    { label: 'forgetting', color: COLORS[1]!, value: (m: MethodResult) => [m.forgetting, m.sd?.forgetting ?? 0] },
  ];
  for (const s of series) {
    const pts = rows.map((m, i) => [x(xs[i]!), ...s.value(m)] as [number, number, number]);
    parts.push(`<polyline fill="none" stroke="${s.color}" stroke-width="1.5" points="${pts.map(([a, v]) => `${a.toFixed(1)},${y(v).toFixed(1)}`).join(' ')}"/>`);
    for (const [a, v, e] of pts)
      parts.push(`<line x1="${a.toFixed(1)}" x2="${a.toFixed(1)}" y1="${y(v - e).toFixed(1)}" y2="${y(v + e).toFixed(1)}" stroke="${s.color}"/><circle cx="${a.toFixed(1)}" cy="${y(v).toFixed(1)}" r="3" fill="${s.color}"/>`);
  }
  return svg(w, h, parts, legend(series.map((s) => s.label), w - 170, top, series.map((s) => s.color)));
}

/** A heat-map cell: the number in %, its background from white (`lo`) to blue (`hi`), the raw value in data-value. */
function heatCell(v: number | null, [lo, hi]: [number, number]): string {
  if (v === null) return '<td class="heat empty">–</td>';
  const t = Math.max(0, Math.min(1, hi > lo ? (v - lo) / (hi - lo) : 0));
  const [r0, g0, b0] = [255, 255, 255];
  const [r1, g1, b1] = [49, 130, 189];
  const mix = (a: number, b: number) => Math.round(a + (b - a) * t);
  const text = t > 0.6 ? '#fff' : '#222';
  return `<td class="heat" data-value="${v}" style="background:rgb(${mix(r0, r1)},${mix(g0, g1)},${mix(b0, b1)});color:${text}">${pct(v)}</td>`;
}

/** Continual rounds: per method, its matrix as a heat map (rows after each round, columns each round's tasks and the old suites), then BWT and forgetting. */
function roundsSection(r: DemoResults): string {
  const rounds = r.rounds;
  if (!rounds) return '';
  const T = rounds.count;
  const values = rounds.methods.flatMap((m) => m.matrix.flat().filter((v): v is number => v !== null)).concat(rounds.base.tasks);
  // Each kind of column shades over its own range, so that small differences stay visible.
  const range = (xs: number[]): [number, number] => [Math.min(...xs), Math.max(...xs)];
  const taskRange = range(values);
  const oldRange = range([rounds.base.old, ...rounds.methods.flatMap((m) => m.old)]);
  const head = `<tr><th>after / on</th>${Array.from({ length: T }, (_, j) => `<th>round ${j + 1}</th>`).join('')}<th>old avg</th></tr>`;
  const matrices = rounds.methods
    .map((m) => {
      const rows = [
        `<tr><th>base</th>${rounds.base.tasks.map((v) => heatCell(v, taskRange)).join('')}${heatCell(rounds.base.old, oldRange)}</tr>`,
        ...m.matrix.map((row, i) => `<tr><th>round ${i + 1}</th>${row.map((v) => heatCell(v, taskRange)).join('')}${heatCell(m.old[i]!, oldRange)}</tr>`),
      ];
      return `<h3>${esc(m.label)}</h3><table class="rounds-matrix" data-method="${esc(m.method)}">${head}${rows.join('')}</table>`;
    })
    .join('');
  const pm = (v: number, s?: number) => `${pct(v)}${s === undefined ? '' : ` ± ${pct(s)}`}`;
  const summary = `<table class="rounds-summary"><tr><th>method</th><th>BWT</th><th>forgetting</th><th>old-suite forgetting</th></tr>${rounds.methods
    .map((m) => `<tr data-method="${esc(m.method)}"><th>${esc(m.label)}</th><td data-value="${m.bwt}">${pm(m.bwt, m.sd?.bwt)}</td><td data-value="${m.forgetting}">${pm(m.forgetting, m.sd?.forgetting)}</td><td data-value="${m.oldForgetting}">${pm(m.oldForgetting, m.sd?.oldForgetting)}</td></tr>`)
    .join('')}</table>`;
  const split = rounds.split.map((s) => `<li>round ${s.round}: ${s.trainRecords} training and ${s.evalRecords} held-out records; families ${esc(s.families.join(', '))}</li>`).join('');
  return `<h2>Continual rounds</h2>
<p>${T} rounds without replay; each round's adapter was ${rounds.mode === 'merge' ? 'merged into the base' : 'kept frozen beneath the next'} before the next round; ${rounds.flashbackBudget} flashbacks per round, spread over the old suites and the earlier rounds' prompts.
Cell (row i, column j): held-out ROUGE-L in % on round j's tasks after training round i (blank: not yet trained); the last column is old-suite accuracy.
BWT = 1/(T-1) &Sigma;<sub>j&lt;T</sub> (R[T][j] &minus; R[j][j]); forgetting = 1/(T-1) &Sigma;<sub>j&lt;T</sub> max<sub>j&le;l&lt;T</sub> (R[l][j] &minus; R[T][j]); old-suite forgetting: max over the base and rounds 1..T&minus;1 minus after round T.</p>
<ul>${split}</ul>
${summary}
${matrices}`;
}

/** Held-out ROUGE-L per new-task family (rows) and method (columns), means over each method's runs. */
function familyTable(r: DemoResults): string {
  const methods = r.methods.filter((m) => m.families);
  if (methods.length === 0) return '';
  const families = [...new Set(methods.flatMap((m) => Object.keys(m.families!)))];
  const head = `<tr><th>family</th>${methods.map((m) => `<th>${esc(m.label)}</th>`).join('')}</tr>`;
  const rows = families.map((f) => `<tr><th>${esc(f)}</th>${methods.map((m) => (m.families![f] === undefined ? '<td>-</td>' : `<td>${pct(m.families![f]!)}</td>`)).join('')}</tr>`);
  return `<h2>Held-out ROUGE-L per task family</h2>
<p>Scores in %, the mean over a family's held-out records (and over seeds). Every answer is in predictions.jsonl: <code>runs/&lt;method&gt;/predictions.jsonl</code>, and <code>base-predictions.jsonl</code> for the base.</p>
<table class="families">${head}${rows.join('')}</table>`;
}

export function renderReport(r: DemoResults, title = 'demo report'): string {
  const trained = r.methods.filter((m) => m.curve?.length);
  const colorOf = (m: MethodResult) => COLORS[r.methods.indexOf(m) % COLORS.length]!;
  const table = resultTable(r);
  const rows = table.rows.map((cells) => `<tr>${cells.map((c, i) => (i === 0 ? `<th>${esc(c)}</th>` : `<td>${esc(c)}</td>`)).join('')}</tr>`);
  const examples = r.methods
    .filter((m) => m.examples?.length)
    .map((m) => `<h3>${esc(m.label)}</h3><ul>${m.examples!.map((e) => `<li><code>${esc(e.input)}</code><br>reference: <code>${esc(e.reference)}</code><br>output: <code>${esc(e.prediction)}</code></li>`).join('')}</ul>`)
    .join('');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>jfa ${esc(title)}</title>
<style>body{font-family:sans-serif;max-width:900px;margin:2em auto;color:#222}table{border-collapse:collapse}td,th{padding:4px 8px;border-bottom:1px solid #ddd;text-align:right}th:first-child{text-align:left}code{font-size:12px}</style>
</head><body>
<h1>Joint Flashback Adaptation: ${esc(title)}</h1>
<p>Base model: ${(r.base.parameters / 1e6).toFixed(2)}M parameters, pretrained in ${(r.base.pretrainSeconds / 60).toFixed(1)} min${r.base.cached ? '' : ' by this run'} (sha256 ${esc(r.base.sha256.slice(0, 12))}).
New-task training: ${r.data.newTrainRecords} records; held-out evaluation: ${r.data.newEvalRecords} records of unseen tasks;
old suites: ${r.data.oldEvalPerSuite} evaluation records each; ${r.data.flashbacks} flashback prompts.
libtorch ${esc(r.runtime.torchVersion)}, ${r.runtime.threads} threads; wall time ${r.wallSeconds.toFixed(0)} s; ${r.seeds > 1 ? `seeds ${r.seed}-${r.seed + r.seeds - 1} (mean ± sd)` : `seed ${r.seed}`}.</p>
<h2>Results</h2>
<p>Scores in %. New ROUGE-L and EM: held-out tasks never seen in training; seen ROUGE-L: training tasks on fresh inputs. Forgetting = base accuracy minus accuracy after training, averaged over the old suites (lower is better).</p>
<table><tr>${table.head.map((h) => `<th>${esc(h)}</th>`).join('')}</tr>${rows.join('')}</table>
${r.rounds ? `<p>With continual rounds this table shows each method after the last round; new ROUGE-L and EM are over every round's held-out tasks.</p>` : ''}
${roundsSection(r)}
${studyChart(r) ? `<h2>The sweep</h2>${studyChart(r)}` : ''}
<h2>Each seed: forgetting against new-task ROUGE-L</h2>
<p>Dots are runs (one per seed), rings the means: lower right is better learning with less forgetting.</p>
${seedChart(r)}
<h2>Old-task accuracy per method</h2>
${barChart(r)}
<h2>Training loss (new-task cross-entropy)</h2>
${lineChart(trained.map((m) => ({ label: m.label, color: colorOf(m), points: m.curve!.map((p) => [p.step, p.sft] as [number, number]) })), 'cross-entropy')}
<h2>Flashback divergence (symmetric KL to the base model)</h2>
${lineChart(trained.filter((m) => m.curve!.some((p) => p.divergence > 0)).map((m) => ({ label: m.label, color: colorOf(m), points: m.curve!.map((p) => [p.step, p.divergence] as [number, number]) })), 'symmetric KL')}
${familyTable(r)}
<h2>Held-out examples</h2>
${examples}
</body></html>
`;
}

// report.html for `jfa demo`: one self-contained page (inline SVG, no scripts, nothing fetched)
// with the results table, old-task accuracy per suite and method, and the training loss curves.

export interface MethodResult {
  method: string;
  label: string;
  old: Record<string, number>;
  newRougeL: number;
  newExactMatch: number;
  /** base accuracy minus this model's, averaged over the old suites */
  forgetting: number;
  trainSeconds?: number;
  steps?: number;
  tokensPerSecond?: number;
  curve?: Array<{ step: number; sft: number; divergence: number }>;
  examples?: Array<{ input: string; reference: string; prediction: string }>;
}

export interface DemoResults {
  out: string;
  seed: number;
  wallSeconds: number;
  base: { dir: string; parameters: number; pretrainSeconds: number; cached: boolean };
  data: { newTrainRecords: number; newEvalRecords: number; oldEvalPerSuite: number; flashbacks: number };
  suites: string[];
  methods: MethodResult[];
  options: unknown;
  runtime: { torchVersion: string; threads: number };
}

const COLORS = ['#888888', '#d62728', '#ff7f0e', '#1f77b4', '#2ca02c', '#9467bd', '#8c564b'];
const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
/** A score in percent, one decimal. */
export const pct = (x: number): string => (100 * x).toFixed(1);

/** Mean accuracy over the old suites. */
export function oldAverage(m: Pick<MethodResult, 'old'>): number {
  const v = Object.values(m.old);
  return v.reduce((s, x) => s + x, 0) / v.length;
}

/** The results table, as the console and report.html both show it: a header and one row per method. */
export function resultTable(r: DemoResults): { head: string[]; rows: string[][] } {
  const head = ['method', 'new ROUGE-L', 'new EM', ...r.suites, 'old avg', 'forgetting', 'steps', 'train s', 'tokens/s'];
  const rows = r.methods.map((m) => [
    m.label,
    pct(m.newRougeL),
    pct(m.newExactMatch),
    ...r.suites.map((s) => pct(m.old[s] ?? 0)),
    pct(oldAverage(m)),
    m.method === 'base' ? '-' : pct(m.forgetting),
    m.steps?.toString() ?? '-',
    m.trainSeconds?.toFixed(0) ?? '-',
    m.tokensPerSecond?.toFixed(0) ?? '-',
  ]);
  return { head, rows };
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

export function renderReport(r: DemoResults): string {
  const trained = r.methods.filter((m) => m.curve?.length);
  const colorOf = (m: MethodResult) => COLORS[r.methods.indexOf(m) % COLORS.length]!;
  const table = resultTable(r);
  const rows = table.rows.map((cells) => `<tr>${cells.map((c, i) => (i === 0 ? `<th>${esc(c)}</th>` : `<td>${esc(c)}</td>`)).join('')}</tr>`);
  const examples = r.methods
    .filter((m) => m.examples?.length)
    .map((m) => `<h3>${esc(m.label)}</h3><ul>${m.examples!.map((e) => `<li><code>${esc(e.input)}</code><br>reference: <code>${esc(e.reference)}</code><br>output: <code>${esc(e.prediction)}</code></li>`).join('')}</ul>`)
    .join('');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>jfa demo report</title>
<style>body{font-family:sans-serif;max-width:900px;margin:2em auto;color:#222}table{border-collapse:collapse}td,th{padding:4px 8px;border-bottom:1px solid #ddd;text-align:right}th:first-child{text-align:left}code{font-size:12px}</style>
</head><body>
<h1>Joint Flashback Adaptation: demo report</h1>
<p>Base model: ${(r.base.parameters / 1e6).toFixed(2)}M parameters (${r.base.cached ? 'cached' : `pretrained in ${r.base.pretrainSeconds.toFixed(0)} s`}).
New-task training: ${r.data.newTrainRecords} records; held-out evaluation: ${r.data.newEvalRecords} records of unseen tasks;
old suites: ${r.data.oldEvalPerSuite} evaluation records each; ${r.data.flashbacks} flashback prompts.
libtorch ${esc(r.runtime.torchVersion)}, ${r.runtime.threads} threads; wall time ${r.wallSeconds.toFixed(0)} s; seed ${r.seed}.</p>
<h2>Results</h2>
<p>Scores in %. Forgetting = base accuracy minus accuracy after training, averaged over the old suites (lower is better).</p>
<table><tr>${table.head.map((h) => `<th>${esc(h)}</th>`).join('')}</tr>${rows.join('')}</table>
<h2>Old-task accuracy per method</h2>
${barChart(r)}
<h2>Training loss (new-task cross-entropy)</h2>
${lineChart(trained.map((m) => ({ label: m.label, color: colorOf(m), points: m.curve!.map((p) => [p.step, p.sft] as [number, number]) })), 'cross-entropy')}
<h2>Flashback divergence (symmetric KL to the base model)</h2>
${lineChart(trained.filter((m) => m.curve!.some((p) => p.divergence > 0)).map((m) => ({ label: m.label, color: colorOf(m), points: m.curve!.map((p) => [p.step, p.divergence] as [number, number]) })), 'symmetric KL')}
<h2>Held-out examples</h2>
${examples}
</body></html>
`;
}

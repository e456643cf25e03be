// The API documentation (`npm run docs`: TypeDoc with strict validation) and report.html as a
// user sees it: rendered by a real browser (Debian's chromium, driven by playwright-core).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { inflateSync } from 'node:zlib';

import { type BrowserContext, chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { aggregate, renderReport } from '../lib/bench/report.js';
import { type DemoResults, type MethodResult, type RunResult } from '../lib/bench/results.js';
import * as api from '../lib/index.js';
import { root } from './helpers.js';

const npm = (...args: string[]) => spawnSync('npm', args, { cwd: root, encoding: 'utf8', timeout: 240_000 });

describe('API documentation', () => {
  it('npm run docs builds, with a page per export of lib/index.ts that shows its example', () => {
    const r = npm('run', 'docs');
    expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0);
    const out = join(root, 'docs', 'api');
    expect(existsSync(join(out, 'index.html'))).toBe(true);
    const values = Object.entries(api);
    expect(values.length).toBeGreaterThan(50);
    for (const [name, value] of values) {
      const isClass = typeof value === 'function' && /^class\b/.test(Function.prototype.toString.call(value));
      const page = join(out, isClass ? 'classes' : typeof value === 'function' ? 'functions' : 'variables', `${name}.html`);
      expect(existsSync(page), `${name}: ${page}`).toBe(true);
      const html = readFileSync(page, 'utf8');
      if (typeof value === 'function') expect(html, `${name} has an example`).toMatch(/<h4[^>]*>Example/);
    }
    // A few pages a user goes to first, with what they must say.
    const train = readFileSync(join(out, 'functions', 'train.html'), 'utf8');
    expect(train).toMatch(/<h4[^>]*>Throws/);
    expect(readFileSync(join(out, 'interfaces', 'TrainOptions.html'), 'utf8')).toContain('lr');
  }, 240_000);

  it("the README's quickstart TypeScript type-checks against the package's types", () => {
    const readme = readFileSync(join(root, 'README.md'), 'utf8');
    const section = readme.slice(readme.indexOf('## Quickstart'));
    const code = /```ts\n([\s\S]*?)```/.exec(section)?.[1];
    expect(code, 'a ts block in the quickstart').toBeTruthy();
    const dir = mkdtempSync(join(tmpdir(), 'jfa-quickstart-'));
    try {
      writeFileSync(join(dir, 'quickstart.mts'), `${code}\nexport {};\n`);
      writeFileSync(
        join(dir, 'tsconfig.json'),
        JSON.stringify({
          compilerOptions: {
            target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', lib: ['ES2023', 'ESNext.Disposable'], types: ['node'],
            typeRoots: [join(root, 'node_modules', '@types')], strict: true, noEmit: true, skipLibCheck: true,
            paths: { 'jfa-torch': [join(root, 'dist', 'index.d.ts')] },
          },
          files: ['quickstart.mts'],
        }),
      );
      const r = spawnSync(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', dir], { encoding: 'utf8' });
      expect(r.status, r.stdout + r.stderr).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('an export without full docs (summary, @param, @returns, @example) fails the build and is named', () => {
    const dir = mkdtempSync(join(root, 'test', '.docs-bad-'));
    try {
      const entry = join(dir, 'bad.ts');
      writeFileSync(
        entry,
        [
          'export function undocumented(a: number): number { return a; }',
          '/** Doubles a number. */',
          'export function noParamDocs(a: number): number { return 2 * a; }',
          '/**',
          ' * Halves a number.',
          ' * @param a - the number',
          ' * @returns a / 2',
          ' * @example',
          ' * ```ts',
          ' * half(4); // 2',
          ' * ```',
          ' */',
          'export function half(a: number): number { return a / 2; }',
        ].join('\n'),
      );
      writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify({ extends: '../../tsconfig.json', compilerOptions: { rootDir: '.', noEmit: true }, include: ['bad.ts'] }));
      // The project's TypeDoc settings (validation, plugin), pointed at this file.
      const settings = JSON.parse(readFileSync(join(root, 'typedoc.json'), 'utf8')) as { plugin: string[] };
      const options = { ...settings, entryPoints: [entry], tsconfig: join(dir, 'tsconfig.json'), out: join(dir, 'api'), plugin: settings.plugin.map((p) => join(root, p)) };
      writeFileSync(join(dir, 'typedoc.json'), JSON.stringify(options));
      const r = spawnSync(process.execPath, [join(root, 'node_modules', 'typedoc', 'bin', 'typedoc'), '--options', join(dir, 'typedoc.json')], { cwd: root, encoding: 'utf8', timeout: 240_000 });
      const log = `${r.stdout}\n${r.stderr}`;
      expect(r.status, log).not.toBe(0);
      expect(log).toMatch(/undocumented.*does not have any documentation/);
      expect(log).toMatch(/noParamDocs \(Function\) lacks @param a, @returns, @example/);
      expect(log).not.toMatch(/half \(Function\)/);
      expect(existsSync(join(dir, 'api', 'index.html'))).toBe(false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 240_000);
});

// --- report.html ----------------------------------------------------------------------------

const CHROMIUM = '/usr/bin/chromium';
// A laptop window. Narrower ones scroll sideways today: the real results table (five suites, 15
// columns) is about 1090 px wide and overflows the page's centred 900 px column to the right.
const VIEWPORT = { width: 1440, height: 900 };

/** Width and height from a PNG's IHDR chunk, and whether its pixels are not all one value. */
function pngInfo(png: Buffer): { width: number; height: number; varied: boolean } {
  expect(png.subarray(1, 4).toString('latin1')).toBe('PNG');
  const idat: Buffer[] = [];
  for (let at = 8; at < png.length; ) {
    const length = png.readUInt32BE(at);
    if (png.toString('latin1', at + 4, at + 8) === 'IDAT') idat.push(png.subarray(at + 8, at + 8 + length));
    at += 12 + length;
  }
  const width = png.readUInt32BE(16);
  const height = png.readUInt32BE(20);
  const raw = inflateSync(Buffer.concat(idat));
  const rowBytes = (raw.length / height) | 0;
  const values = new Set<number>();
  for (let y = 0; y < height; y += 7) for (let x = 1; x < rowBytes; x += 13) values.add(raw[y * rowBytes + x]!);
  return { width, height, varied: values.size > 8 };
}

const pct = (x: number) => (100 * x).toFixed(1);
const cell = (v: number, spread?: number) => (spread === undefined ? pct(v) : `${pct(v)} ± ${pct(spread)}`);

/** What a results-table cell must show for a method under a column, computed from results.json's fields. */
function expectedCell(r: DemoResults, m: MethodResult, column: string): string {
  const old = Object.values(m.old);
  switch (column) {
    case 'method': return m.label;
    case 'new ROUGE-L': return cell(m.newRougeL, m.sd?.newRougeL);
    case 'new EM': return cell(m.newExactMatch, m.sd?.newExactMatch);
    case 'seen ROUGE-L': return m.seenRougeL === undefined ? '-' : cell(m.seenRougeL, m.sd?.seenRougeL);
    case 'old avg': return cell(old.reduce((s, x) => s + x, 0) / old.length, m.sd?.oldAverage);
    case 'forgetting': return m.method === 'base' ? '-' : cell(m.forgetting, m.sd?.forgetting);
    case 'steps': return m.steps === undefined ? '-' : String(m.steps);
    case 'train s': return m.trainSeconds === undefined ? '-' : m.trainSeconds.toFixed(0);
    case 'tokens/s': return m.tokensPerSecond === undefined ? '-' : m.tokensPerSecond.toFixed(0);
  }
  if (r.suites.includes(column)) return cell(m.old[column]!, m.sd?.old[column]);
  throw new Error(`the results table has a column this test does not know: "${column}" (add it to expectedCell)`);
}

/** A small, schema-valid results object: three methods, one with several seeds, an awkward label. */
function syntheticResults(): DemoResults {
  const suites = ['arith-gsm', 'science-mc', 'logic'];
  const run = (seed: number, base: number): RunResult => ({
    seed,
    old: Object.fromEntries(suites.map((s, i) => [s, base - 0.01 * i * seed])),
    newRougeL: 0.3 + 0.0137 * seed,
    newExactMatch: 0.05 * seed,
    seenRougeL: 0.61 + 0.001 * seed,
    forgetting: 0.02 * seed,
    trainSeconds: 12.6 + seed,
    steps: 40,
    tokensPerSecond: 1234.5 + seed,
    curve: Array.from({ length: 20 }, (_, i) => ({ step: i + 1, sft: 3 / (i + 1), divergence: 0.01 * i })),
    examples: [{ input: 'what is 2 + <3>?', reference: '5', prediction: `5 & more ${seed}` }],
  });
  const base: MethodResult = {
    method: 'base',
    label: 'base',
    old: { 'arith-gsm': 0.456, 'science-mc': 0.3335, logic: 0.9 },
    newRougeL: 0.1234,
    newExactMatch: 0,
    seenRougeL: 0.2,
    forgetting: 0,
  };
  return {
    out: '/tmp/synthetic',
    seed: 1,
    seeds: 3,
    wallSeconds: 321.4,
    base: { dir: '/tmp/synthetic/base', parameters: 4_200_000, pretrainSeconds: 600, cached: true, sha256: 'ab'.repeat(32) },
    data: { newTrainRecords: 640, newEvalRecords: 120, oldEvalPerSuite: 50, flashbacks: 96 },
    suites,
    methods: [base, aggregate('sft', 'SFT', [run(1, 0.4), run(2, 0.38), run(3, 0.35)]), aggregate('jfa', 'jfa <latent> & "pcgrad"', [run(1, 0.45), run(2, 0.44), run(3, 0.46)])],
    options: {},
    runtime: { torchVersion: '2.13.0', threads: 2 },
  };
}

/** A study's results: a row per swept value after the base's, and the sweep chart. */
function syntheticStudy(): DemoResults {
  const r = syntheticResults();
  const [base, sft] = r.methods as [MethodResult, MethodResult];
  const alphas = [0.1, 1, 10];
  r.methods = [base, ...alphas.map((a, i) => ({ ...sft, method: 'jfa', label: `alpha ${a}`, newRougeL: 0.3 + 0.1 * i, forgetting: 0.05 - 0.01 * i }))];
  r.points = alphas.map((a) => ({ label: `alpha ${a}`, x: a }));
  return r;
}

/** What the page shows, read in the browser (a string: the test's type-check has no DOM library). */
const DOM_PROBE = `(() => ({
  tables: [...document.querySelectorAll('table')].map((t) => [...t.rows].map((row) => [...row.cells].map((c) => c.textContent ?? ''))),
  charts: [...document.querySelectorAll('svg')].map((s) => {
    const b = s.getBoundingClientRect();
    return { width: b.width, height: b.height, right: b.right, marks: s.querySelectorAll('rect, circle, polyline, line').length };
  }),
  scrollWidth: document.documentElement.scrollWidth,
  title: document.title,
  svgMarkup: [...document.querySelectorAll('svg')].map((s) => s.outerHTML).join(''),
}))()`;
interface DomProbe {
  tables: string[][][];
  charts: Array<{ width: number; height: number; right: number; marks: number }>;
  scrollWidth: number;
  title: string;
  svgMarkup: string;
}

describe('report.html in headless Chromium', () => {
  let context: BrowserContext;
  const userData = mkdtempSync(join(tmpdir(), 'jfa-chromium-'));
  const work = mkdtempSync(join(tmpdir(), 'jfa-report-'));

  beforeAll(async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: run \`node scripts/setup.mjs\` as root, or apt-get install chromium`);
    context = await chromium.launchPersistentContext(userData, {
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
      viewport: VIEWPORT,
      deviceScaleFactor: 1,
    });
  });
  afterAll(async () => {
    await context?.close();
    rmSync(userData, { recursive: true, force: true });
    rmSync(work, { recursive: true, force: true });
  });

  const cases: Array<[string, () => DemoResults, string | undefined]> = [
    ['synthetic demo, three seeds', syntheticResults, undefined],
    ['synthetic study', syntheticStudy, 'study: alpha'],
    // written by a real (tiny) `jfa demo --methods sft jfa` run: curves, examples, one seed
    ['a real demo run', () => JSON.parse(readFileSync(join(root, 'test', 'fixtures', 'report', 'demo-results.json'), 'utf8')) as DemoResults, undefined],
  ];

  for (const [name, make, title] of cases)
    it(`${name}: no console or page errors, a screenshot of the viewport's size, the table equals results.json`, async () => {
      const results = make();
      // Through JSON and back, as results.json is: the report must be rendered from what is on disk.
      const json = join(work, `${name.replace(/\W+/g, '-')}.json`);
      writeFileSync(json, JSON.stringify(results));
      const onDisk = JSON.parse(readFileSync(json, 'utf8')) as DemoResults;
      const file = json.replace(/\.json$/, '.html');
      writeFileSync(file, renderReport(onDisk, title));

      const page = await context.newPage();
      const problems: string[] = [];
      const requests: string[] = [];
      page.on('console', (m) => {
        if (m.type() === 'error' || m.type() === 'warning') problems.push(`console ${m.type()}: ${m.text()}`);
      });
      page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
      page.on('request', (q) => requests.push(q.url()));
      const url = pathToFileURL(file).href;
      const response = await page.goto(url, { waitUntil: 'load' });
      expect(response?.ok()).toBe(true);

      const shot = pngInfo(await page.screenshot({ type: 'png' }));
      expect({ width: shot.width, height: shot.height }).toEqual(VIEWPORT);
      expect(shot.varied, 'the screenshot is not blank').toBe(true);
      const scrollHeight = (await page.evaluate('document.documentElement.scrollHeight')) as number;
      const full = pngInfo(await page.screenshot({ type: 'png', fullPage: true }));
      expect({ width: full.width, height: full.height }).toEqual({ width: VIEWPORT.width, height: Math.max(VIEWPORT.height, scrollHeight) });

      const dom = (await page.evaluate(DOM_PROBE)) as DomProbe;
      await page.close();

      expect(problems).toEqual([]);
      expect(requests, 'the page is self-contained').toEqual([url]);
      expect(dom.scrollWidth, 'nothing overflows the viewport sideways').toBeLessThanOrEqual(VIEWPORT.width);
      if (title) expect(dom.title).toContain(title);
      expect(dom.svgMarkup).not.toMatch(/NaN|Infinity|undefined/);

      // Every table: a header and rows of its width, no empty or non-numeric garbage cells.
      expect(dom.tables.length).toBeGreaterThan(0);
      for (const table of dom.tables) {
        expect(table.length).toBeGreaterThan(1);
        for (const row of table) {
          expect(row).toHaveLength(table[0]!.length);
          for (const c of row) expect(c.trim()).not.toMatch(/^$|NaN|undefined|Infinity|null/);
        }
      }
      // Every chart has a size, fits the page and draws something.
      expect(dom.charts.length).toBeGreaterThanOrEqual(3);
      for (const c of dom.charts) {
        expect(c.width).toBeGreaterThan(100);
        expect(c.height).toBeGreaterThan(100);
        expect(c.right).toBeLessThanOrEqual(VIEWPORT.width);
        expect(c.marks).toBeGreaterThan(5);
      }

      // The results table: its numbers are results.json's, formatted as the report formats them.
      const table = dom.tables.find((t) => t[0]![0] === 'method');
      expect(table, 'a results table headed "method"').toBeDefined();
      const [head, ...rows] = table!;
      for (const s of onDisk.suites) expect(head).toContain(s);
      expect(rows.map((row) => row[0])).toEqual(onDisk.methods.map((m) => m.label));
      rows.forEach((row, i) => {
        const m = onDisk.methods[i]!;
        expect(row, m.label).toEqual(head!.map((column) => expectedCell(onDisk, m, column)));
      });
    }, 60_000);
});

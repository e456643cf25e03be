// The shape of lib/: no import circle anywhere (type-only imports count: a circle of types is still
// a circle a reader has to untangle), no import from a higher layer, and no file over 600 lines.
// The import graph comes from the TypeScript compiler's own pre-processor; each check proves it can
// fail on a planted violation.
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';

import ts from 'typescript';
import { afterAll, describe, expect, it } from 'vitest';

import { root } from './helpers.js';

const LIB = join(root, 'lib');
const MAX_LINES = 600;
/** lib/'s layers from the bottom ('' is the modules directly in lib/): a file imports from its own or lower ones. */
const LAYERS = ['util', '', 'model', 'data', 'jfa', 'bench', 'cli'];
/** The package's entry re-exports every layer. */
const ENTRY = 'index.ts';

/** Every .ts file under dir, recursively. */
function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? sources(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : []));
}

/** Each file's relative imports and re-exports (`./x.js` is `./x.ts`), by path relative to dir. */
function importGraph(dir: string): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const file of sources(dir)) {
    const { importedFiles } = ts.preProcessFile(readFileSync(file, 'utf8'), true, true);
    const targets = importedFiles
      .map((f) => f.fileName)
      .filter((name) => name.startsWith('.'))
      .map((name) => relative(dir, resolve(dirname(file), name.replace(/\.js$/, '.ts'))));
    graph.set(relative(dir, file), [...new Set(targets)]);
  }
  return graph;
}

/** Every circle in the graph, once each, as the files around it (the first one repeated at the end). */
function findCycles(graph: Map<string, string[]>): string[][] {
  const cycles: string[][] = [];
  const seen = new Set<string>();
  const done = new Set<string>();
  const path: string[] = [];
  const visit = (node: string) => {
    seen.add(node);
    path.push(node);
    for (const next of graph.get(node) ?? []) {
      if (!graph.has(next) || done.has(next)) continue;
      if (path.includes(next)) cycles.push([...path.slice(path.indexOf(next)), next]);
      else if (!seen.has(next)) visit(next);
    }
    path.pop();
    done.add(node);
  };
  for (const node of [...graph.keys()].sort()) if (!seen.has(node)) visit(node);
  return cycles;
}

/** A file's layer (its folder under lib/), or an error for a folder the layer list does not place. */
function layerOf(file: string): number {
  const folder = file.includes('/') ? file.slice(0, file.indexOf('/')) : '';
  const layer = LAYERS.indexOf(folder);
  if (layer < 0) throw new Error(`lib/${folder}/ has no place in the layers (${LAYERS.join(', ')}): add it to LAYERS, and to docs/architecture.md`);
  return layer;
}

/** The imports that reach up a layer, as "file -> target". */
function upwardImports(graph: Map<string, string[]>): string[] {
  const up: string[] = [];
  for (const [file, targets] of graph) if (file !== ENTRY) for (const t of targets) if (layerOf(t) > layerOf(file)) up.push(`${file} -> ${t}`);
  return up;
}

/** The files under dir longer than MAX_LINES, with their line counts. */
function tooLong(dir: string): string[] {
  return sources(dir)
    .map((file) => ({ file: relative(dir, file), lines: readFileSync(file, 'utf8').split('\n').length - 1 }))
    .filter((f) => f.lines > MAX_LINES)
    .map((f) => `${f.file}: ${f.lines} lines`);
}

describe('lib/ structure', () => {
  const planted = mkdtempSync(join(tmpdir(), 'jfa-structure-'));
  afterAll(() => rmSync(planted, { recursive: true, force: true }));

  it('the cycle finder finds a planted circle, type-only imports and re-exports included', () => {
    expect(findCycles(new Map([['a', ['b']], ['b', ['c']], ['c', ['a']], ['d', ['a']]]))).toEqual([['a', 'b', 'c', 'a']]);
    expect(findCycles(new Map([['a', ['b']], ['b', ['c']], ['c', []]]))).toEqual([]);
    writeFileSync(join(planted, 'a.ts'), "import { b } from './b.js';\nexport const a = b + 1;\n");
    writeFileSync(join(planted, 'b.ts'), "import { type C } from './c.js';\nexport const b: C = 1;\n");
    writeFileSync(join(planted, 'c.ts'), "export type { A } from './d.js';\nexport type C = number;\n");
    writeFileSync(join(planted, 'd.ts'), "import { a } from './a.js';\nexport type A = typeof a;\n");
    expect(findCycles(importGraph(planted))).toEqual([['a.ts', 'b.ts', 'c.ts', 'd.ts', 'a.ts']]);
  });

  it('no import circle under lib/', () => {
    const graph = importGraph(LIB);
    expect(graph.size).toBeGreaterThan(50);
    // every relative import resolves to a file of lib/ (else the graph would miss edges)
    for (const [file, targets] of graph) for (const t of targets) expect(graph.has(t), `${file} imports ${t}`).toBe(true);
    expect(findCycles(graph).map((c) => c.join(' -> '))).toEqual([]);
  });

  it('no import reaches up a layer (and a planted one is found)', () => {
    expect(upwardImports(new Map([['model/x.ts', ['jfa/y.ts', 'tensor.ts']], ['jfa/y.ts', ['model/x.ts']], ['tensor.ts', ['util/files.ts']]]))).toEqual(['model/x.ts -> jfa/y.ts']);
    expect(() => layerOf('elsewhere/z.ts')).toThrow('lib/elsewhere/ has no place in the layers');
    expect(upwardImports(importGraph(LIB))).toEqual([]);
  });

  it(`no file under lib/ over ${MAX_LINES} lines (and a planted long one is found)`, () => {
    writeFileSync(join(planted, 'long.ts'), 'export {};\n'.repeat(MAX_LINES + 1));
    expect(tooLong(planted)).toEqual([`long.ts: ${MAX_LINES + 1} lines`]);
    expect(tooLong(LIB)).toEqual([]);
  });
});

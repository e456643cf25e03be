// The docs compile: every TypeScript example a user reads (```ts blocks in README.md and docs/*.md,
// @example blocks of the TSDoc in lib/) type-checks as a module of a user's strict ESM project
// (NodeNext, ES2022, top-level await, strict + exactOptionalPropertyTypes + noUncheckedIndexedAccess)
// against the package's own types. All snippets are checked in one program; an error names the doc
// and line it came from. A snippet may opt out only with a first line `// @ts-docs-skip: why` (the
// reason is required; opt-outs are counted and listed).
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';

import ts from 'typescript';
import { afterAll, describe, expect, it } from 'vitest';

import { root } from './helpers.js';

const LIB = join(root, 'lib');
const SKIP = /^\/\/\s*@ts-docs-skip\b:?\s*(.*)$/;

/** One example: the file and line (1-based) its first code line comes from, its code, and its opt-out reason if any. */
interface Snippet {
  file: string;
  line: number;
  code: string;
  /** The lib module whose TSDoc holds it (its non-public exports are in scope, as for a maintainer reading it). */
  module?: string;
  skip?: string;
}

/** The ```ts / ```typescript blocks of a markdown text (other fenced blocks are stepped over whole). */
function markdownSnippets(file: string, text: string, firstLine = 1, module?: string): Snippet[] {
  const lines = text.split('\n');
  const out: Snippet[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)(`{3,}|~{3,})\s*([\w-]*)/.exec(lines[i] ?? '');
    if (!open) continue;
    const [, indent = '', fence = '', lang = ''] = open;
    let end = i + 1;
    while (end < lines.length && !new RegExp(`^\\s*${fence[0]}{${fence.length},}\\s*$`).test(lines[end] ?? '')) end++;
    if (lang === 'ts' || lang === 'typescript') {
      const body = lines.slice(i + 1, end).map((l) => (l.startsWith(indent) ? l.slice(indent.length) : l.trimStart()));
      out.push(snippet({ file, line: firstLine + i + 1, code: body.join('\n'), ...(module ? { module } : {}) }));
    }
    i = end;
  }
  return out;
}

function snippet(s: Snippet): Snippet {
  const skip = SKIP.exec(s.code.split('\n')[0]?.trim() ?? '');
  return skip ? { ...s, skip: skip[1]?.trim() ?? '' } : s;
}

/** The @example blocks of a lib file's TSDoc, found by the compiler's JSDoc parser. */
function tsdocSnippets(file: string, text: string): { snippets: Snippet[]; tags: number } {
  const source = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true);
  const docs = new Map<number, ts.JSDoc>();
  const visit = (node: ts.Node): void => {
    for (const doc of ts.getJSDocCommentsAndTags(node)) if (ts.isJSDoc(doc)) docs.set(doc.pos, doc);
    ts.forEachChild(node, visit);
  };
  visit(source);
  const snippets: Snippet[] = [];
  let tags = 0;
  for (const doc of docs.values()) {
    for (const tag of doc.tags ?? []) {
      if (tag.tagName.text !== 'example') continue;
      tags++;
      const start = tag.tagName.end;
      const line = source.getLineAndCharacterOfPosition(start).line + 1;
      const body = text
        .slice(start, tag.end)
        .replace(/\*\/\s*$/, '')
        .split('\n')
        .map((l, k) => (k === 0 ? l.trim() : l.replace(/^\s*\*(?: |$)/, '')));
      const content = body.join('\n');
      if (/^\s*(`{3,}|~{3,})/m.test(content)) snippets.push(...markdownSnippets(file, content, line, file));
      else {
        // TypeDoc reads an @example without a fence as code: so do we (its first line is a title if not blank).
        const first = body.findIndex((l) => l.trim() !== '');
        snippets.push(snippet({ file, line: line + first, code: body.slice(first).join('\n').trimEnd(), module: file }));
      }
    }
  }
  return { snippets, tags };
}

/** The names a module exports, read from its syntax (following `export * from`), so snippets can import them by name. */
function exportedNames(file: string, seen = new Set<string>()): Set<string> {
  const names = new Set<string>();
  if (seen.has(file)) return names;
  seen.add(file);
  const source = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, true);
  for (const s of source.statements) {
    const exported = ts.canHaveModifiers(s) && ts.getModifiers(s)?.some((m) => m.kind === ts.SyntaxKind.ExportKeyword);
    if (ts.isExportDeclaration(s)) {
      if (s.exportClause && ts.isNamedExports(s.exportClause)) for (const e of s.exportClause.elements) names.add(e.name.text);
      else if (!s.exportClause && s.moduleSpecifier && ts.isStringLiteral(s.moduleSpecifier)) {
        const target = resolve(dirname(file), s.moduleSpecifier.text.replace(/\.js$/, '.ts'));
        for (const n of exportedNames(target, seen)) names.add(n);
      }
    } else if (exported && ts.isVariableStatement(s)) {
      for (const d of s.declarationList.declarations) for (const n of bindingNames(d.name)) names.add(n);
    } else if (exported && 'name' in s && s.name && ts.isIdentifier(s.name as ts.Node)) {
      names.add((s.name as ts.Identifier).text);
    }
  }
  return names;
}

function bindingNames(name: ts.BindingName): string[] {
  if (ts.isIdentifier(name)) return [name.text];
  return name.elements.flatMap((e) => (ts.isOmittedExpression(e) ? [] : bindingNames(e.name)));
}

/** The names a snippet binds at its top level (declarations and imports): the preamble must not bind them again. */
function topLevelNames(code: string): Set<string> {
  const source = ts.createSourceFile('snippet.ts', code, ts.ScriptTarget.Latest, false);
  const names = new Set<string>();
  for (const s of source.statements) {
    if (ts.isVariableStatement(s)) for (const d of s.declarationList.declarations) for (const n of bindingNames(d.name)) names.add(n);
    else if (ts.isImportDeclaration(s) && s.importClause) {
      const c = s.importClause;
      if (c.name) names.add(c.name.text);
      if (c.namedBindings && ts.isNamespaceImport(c.namedBindings)) names.add(c.namedBindings.name.text);
      else if (c.namedBindings) for (const e of c.namedBindings.elements) names.add(e.name.text);
    } else if ('name' in s && s.name && ts.isIdentifier(s.name as ts.Node)) names.add((s.name as ts.Identifier).text);
  }
  return names;
}

/**
 * Values the examples use without making them, as a reader of an API page takes them to be at hand:
 * the model and tokenizer, a batch's ids and mask, the records being trained on, and the receiver
 * of a class's method examples. Each name means the same thing throughout the docs; anything else a
 * snippet makes or declares itself. A name the snippet binds is not declared again.
 */
const AMBIENT: Record<string, string> = {
  model: 'LlamaModel',
  tokenizer: 'Tokenizer',
  ids: 'Tensor', // int64 token ids (b, t)
  attentionMask: 'Tensor', // (b, t)
  records: 'InstanceRecord[]',
  flashbacks: 'FlashbackRecord[]',
  optimizer: 'AdamW',
  index: 'Index',
  group: 'ProcessGroup',
  tasks: 'LatentTasks',
  pool: 'LatentPool',
};

/**
 * The module a snippet is checked as: the package's exports imported by name (unless the snippet
 * imports from 'jfa-torch' itself, as a complete example in the manual does), the exports of the lib
 * module whose TSDoc holds it, and the ambient values it uses but does not make; then the snippet.
 */
function moduleText(s: Snippet, publicNames: Set<string>): { text: string; preambleLines: number } {
  const own = topLevelNames(s.code);
  const free = (n: string) => !own.has(n);
  const lines: string[] = [];
  if (!/\bfrom\s+['"]jfa-torch['"]/.test(s.code)) {
    const names = [...publicNames].filter(free);
    if (names.length) lines.push(`import { ${names.join(', ')} } from 'jfa-torch';`);
    if (s.module) {
      const internal = [...exportedNames(join(root, s.module))].filter((n) => free(n) && !publicNames.has(n));
      if (internal.length) lines.push(`import { ${internal.join(', ')} } from '${join(root, s.module).replace(/\.ts$/, '.js')}';`);
    }
  }
  for (const [name, type] of Object.entries(AMBIENT)) {
    if (free(name) && new RegExp(`\\b${name}\\b`).test(s.code)) lines.push(`declare const ${name}: import('jfa-torch').${type};`);
  }
  lines.push('export {};');
  return { text: `${lines.join('\n')}\n${s.code}\n`, preambleLines: lines.length };
}

const COMPILER_OPTIONS = {
  target: 'ES2022',
  module: 'NodeNext',
  moduleResolution: 'NodeNext',
  lib: ['ES2022'], // what target ES2022 gives a Node project; `using` needs only @types/node's Disposable
  types: ['node'],
  typeRoots: [join(root, 'node_modules', '@types')],
  strict: true,
  exactOptionalPropertyTypes: true,
  noUncheckedIndexedAccess: true,
  noEmit: true,
  skipLibCheck: true,
  paths: { 'jfa-torch': [join(LIB, 'index.ts')] },
};

/** One error: the snippet it is in, and "file:line: TSnnnn message" with the line in the doc. */
interface SnippetError {
  snippet: Snippet | undefined;
  message: string;
}

/** Type-checks the snippets in one program; returns one entry per error. */
function checkSnippets(snippets: Snippet[]): SnippetError[] {
  const dir = mkdtempSync(join(tmpdir(), 'jfa-docs-compile-'));
  try {
    writeFileSync(join(dir, 'package.json'), JSON.stringify({ type: 'module' }));
    const publicNames = exportedNames(join(LIB, 'index.ts'));
    const files = new Map<string, { s: Snippet; preambleLines: number }>();
    snippets.forEach((s, k) => {
      const file = join(dir, `snippet-${k}.ts`);
      const { text, preambleLines } = moduleText(s, publicNames);
      writeFileSync(file, text);
      files.set(file, { s, preambleLines });
    });
    const { options, errors: bad } = ts.convertCompilerOptionsFromJson(COMPILER_OPTIONS, dir);
    if (bad.length) throw new Error(ts.flattenDiagnosticMessageText(bad[0]?.messageText, '\n'));
    const program = ts.createProgram([...files.keys()], options);
    const errors: SnippetError[] = [...program.getOptionsDiagnostics(), ...program.getGlobalDiagnostics()].map((d) => ({
      snippet: undefined,
      message: `compiler: TS${d.code} ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`,
    }));
    for (const [file, { s, preambleLines }] of files) {
      const source = program.getSourceFile(file);
      if (!source) throw new Error(`${file} is not in the program`);
      for (const d of [...program.getSyntacticDiagnostics(source), ...program.getSemanticDiagnostics(source)]) {
        const line = source.getLineAndCharacterOfPosition(d.start ?? 0).line - preambleLines;
        const where = line < 0 ? `${s.file}:${s.line} (preamble)` : `${s.file}:${s.line + line}`;
        errors.push({ snippet: s, message: `${where}: TS${d.code} ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}` });
      }
    }
    return errors;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function libFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? libFiles(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : []));
}

function allSnippets(): { snippets: Snippet[]; tags: number; exampleLines: number } {
  const docs = ['README.md', ...readdirSync(join(root, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)];
  const snippets = docs.flatMap((f) => markdownSnippets(f, readFileSync(join(root, f), 'utf8')));
  let tags = 0;
  let exampleLines = 0;
  for (const abs of libFiles(LIB)) {
    const text = readFileSync(abs, 'utf8');
    const found = tsdocSnippets(relative(root, abs), text);
    snippets.push(...found.snippets);
    tags += found.tags;
    exampleLines += text.match(/^\s*\*\s*@example\b/gm)?.length ?? 0;
  }
  return { snippets, tags, exampleLines };
}

/**
 * Packages a snippet may import that this project does not depend on: another test, which installs
 * the package, type-checks those snippets against it. They are counted and listed, not checked here.
 */
const CHECKED_ELSEWHERE: Record<string, string> = { 'node-llama-cpp': 'test/40 (against the node-llama-cpp it installs)' };
const elsewhere = (s: Snippet) => Object.keys(CHECKED_ELSEWHERE).find((m) => new RegExp(`\\bfrom\\s+['"]${m}['"]`).test(s.code));

describe('the docs compile', () => {
  const all = allSnippets();
  const { tags, exampleLines } = all;
  const left = all.snippets.filter((s) => elsewhere(s));
  const snippets = all.snippets.filter((s) => !elsewhere(s));
  const bySource = (s: Snippet) => (s.file.startsWith('lib/') ? 'TSDoc in lib/' : s.file);
  const counts: Record<string, number> = {};
  for (const s of snippets) counts[bySource(s)] = (counts[bySource(s)] ?? 0) + 1;
  const skipped = snippets.filter((s) => s.skip !== undefined);
  afterAll(() => {
    console.log(`docs-compile: ${snippets.length} snippets (${Object.entries(counts).map(([k, n]) => `${k} ${n}`).join(', ')}); ${skipped.length} opted out`);
    for (const s of skipped) console.log(`  opt-out ${s.file}:${s.line}: ${s.skip}`);
    for (const s of left) console.log(`  checked by ${CHECKED_ELSEWHERE[elsewhere(s)!]}: ${s.file}:${s.line}`);
  });

  it('finds every @example tag of lib/ and the ts blocks of the README and the manual; every opt-out says why', () => {
    expect(tags).toBe(exampleLines);
    expect(skipped.filter((s) => !s.skip).map((s) => `${s.file}:${s.line}`), 'opt-outs without a reason').toEqual([]);
    expect(snippets.filter((s) => s.file.startsWith('lib/')).length).toBeGreaterThanOrEqual(tags);
    expect(counts['README.md']).toBeGreaterThanOrEqual(1);
    expect(Object.keys(counts).filter((k) => k.startsWith('docs/')).length).toBeGreaterThanOrEqual(2);
  });

  it('every example type-checks under strict, exactOptionalPropertyTypes and noUncheckedIndexedAccess', () => {
    const errors = checkSnippets(snippets.filter((s) => s.skip === undefined));
    const failing = new Set(errors.map((e) => e.snippet)).size;
    expect(errors.map((e) => e.message), `${failing} of ${snippets.length} snippets fail:\n${errors.map((e) => e.message).join('\n')}`).toEqual([]);
  });

  it('can fail: a wrong example is named by file and line, an undeclared name is not declared away, an opt-out is counted', () => {
    const planted = markdownSnippets(
      'planted.md',
      [
        '# Planted',
        '```ts',
        "const old = readJsonl('old.jsonl', 'old');", // no such record kind
        "tokenizer.batch(['a'], { padding: undefined });", // padding?: 'left' | 'right' takes no undefined under exactOptionalPropertyTypes
        '```',
        '```ts',
        'const logits = model.logits(inputIds);', // inputIds is no ambient value
        '```',
        '```ts',
        '// @ts-docs-skip: planted, never checked',
        'const x: number = "not a number";',
        '```',
      ].join('\n'),
    );
    expect(planted.map((s) => s.skip)).toEqual([undefined, undefined, 'planted, never checked']);
    const doc = tsdocSnippets(
      'lib/planted.ts',
      [
        '/**',
        ' * Doubles.',
        ' * @example',
        ' * ```ts',
        ' * const n: number = tensor([1]);', // a Tensor is no number
        ' * ```',
        ' * @example',
        " * const [first] = newTasks(); first.name;", // unfenced, as TypeDoc reads it; first may be undefined
        ' */',
        'export function double(x: number): number { return 2 * x; }',
      ].join('\n'),
    );
    expect(doc.tags).toBe(2);
    planted.push(...doc.snippets.map((s) => ({ ...s, module: 'lib/index.ts' }))); // no lib/planted.ts to import from
    const errors = checkSnippets(planted.filter((s) => s.skip === undefined)).map((e) => e.message);
    expect(errors.find((e) => e.startsWith('planted.md:3: TS2769')), errors.join('\n')).toBeDefined();
    expect(errors.find((e) => e.startsWith('planted.md:4: TS2379')), errors.join('\n')).toBeDefined();
    expect(errors.find((e) => e.startsWith('planted.md:7: TS2304') && e.includes("'inputIds'")), errors.join('\n')).toBeDefined();
    expect(errors.find((e) => e.startsWith('lib/planted.ts:5: TS2322')), errors.join('\n')).toBeDefined();
    expect(errors.find((e) => e.startsWith('lib/planted.ts:8: TS18048')), errors.join('\n')).toBeDefined();
    expect(errors).toHaveLength(5);
  });
});

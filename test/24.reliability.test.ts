// What the reliability pass (scripts/reliability/) relies on, and what its fuzzers found, kept as
// tests that run in every `npm test`: the JFA_ADDON override the sanitizer run loads its addon
// with, the committed fuzz corpora replayed through the real readers, and the tokenizer findings.
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { loadNative } from '../lib/native.js';
import { loadSafetensors } from '../lib/model/safetensors.js';
import { Tokenizer } from '../lib/model/tokenizer.js';
import { node, root } from './helpers.js';

const tmp = mkdtempSync(join(tmpdir(), 'jfa-reliability-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const loadSnippet = `
import { loadNative } from './dist/native.js';
try { console.log('LOADED|' + loadNative().binaryPath); } catch (e) { console.log(e.name + '|' + e.message); }`;

describe('JFA_ADDON', () => {
  it('loads the addon it names, from wherever it is', () => {
    const dir = join(tmp, 'addon');
    mkdirSync(dir);
    const from = loadNative().binaryPath.replace(/[^/]+$/, '');
    for (const f of ['jfa_torch.node', 'jfa_preload.so', 'jfa_torch.build.json']) copyFileSync(join(from, f), join(dir, f));
    const r = node(loadSnippet, { JFA_ADDON: join(dir, 'jfa_torch.node') });
    expect(r.stdout.trim()).toBe(`LOADED|${join(dir, 'jfa_torch.node')}`);
  });

  it('names itself when it points at no file', () => {
    const missing = join(tmp, 'nowhere', 'jfa_torch.node');
    const r = node(loadSnippet, { JFA_ADDON: missing });
    expect(r.stdout).toContain('NativeLoadError|');
    expect(r.stdout).toContain(`JFA_ADDON=${missing} (not a file)`);
  });
});

describe('the safetensors fuzz corpus, through the real loader', () => {
  const dir = join(root, 'native', 'core', 'fuzz', 'corpus', 'safetensors_header');
  // The corpus holds whole files and bare JSON headers (which the fuzz target wraps); as files,
  // every one must load or be refused with a RangeError naming it.
  const files = readdirSync(dir).sort();

  // The files the loader accepts; every other file of the corpus is refused (same-offsets: two tensors on the same bytes, which alias).
  const valid = ['all-dtypes', 'empty-header', 'metadata-only', 'scalar-f64', 'two-tensors', 'unicode-name', 'zero-size'];

  it('loads the valid files and refuses the rest with a RangeError naming the file', () => {
    expect(files).toEqual(expect.arrayContaining(valid));
    for (const f of files) {
      const path = join(tmp, f);
      writeFileSync(path, readFileSync(join(dir, f)));
      let thrown: unknown;
      try {
        const c = loadSafetensors(path);
        for (const t of Object.values(c.tensors)) t.dispose();
      } catch (e) {
        thrown = e;
      }
      if (valid.includes(f)) {
        expect(thrown, f).toBeUndefined();
      } else {
        expect(thrown, f).toBeInstanceOf(RangeError);
        expect((thrown as Error).message.startsWith(`${path}: `), `${f}: ${(thrown as Error).message}`).toBe(true);
      }
    }
  });
});

describe('the JS fuzzer', () => {
  it('replays its committed corpus (past findings included) without a finding', () => {
    for (const target of ['jsonl', 'tokenizer']) {
      const corpus = readdirSync(join(root, 'scripts', 'reliability', 'corpus', target)).length;
      const r = spawnSync(process.execPath, [join(root, 'scripts', 'reliability', 'fuzz-js.mjs'), target, '--seconds', '0', '--artifacts', join(tmp, 'found')], {
        cwd: root,
        encoding: 'utf8',
        timeout: 120_000,
      });
      expect(r.stderr, target).toBe('');
      const summary = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { runs: number; crashes: number };
      expect(summary.crashes).toBe(0);
      // JSONL inputs run as both kinds, in memory and from disk.
      expect(summary.runs).toBe(target === 'jsonl' ? corpus * 4 : corpus);
      expect(r.status).toBe(0);
    }
  });
});

describe('tokenizer files the fuzzer broke', () => {
  const model = join(root, 'models', 'jfa-base');
  const broken = (name: string, edit: (tok: Record<string, unknown>, cfg: Record<string, unknown>) => void) => {
    const dir = join(tmp, name);
    mkdirSync(dir);
    const tok = JSON.parse(readFileSync(join(model, 'tokenizer.json'), 'utf8')) as Record<string, unknown>;
    const cfg = JSON.parse(readFileSync(join(model, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
    edit(tok, cfg);
    writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tok));
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(cfg));
    return dir;
  };
  const cases: [string, (tok: Record<string, unknown>, cfg: Record<string, unknown>) => void][] = [
    ['a chat_template that is a number', (_t, c) => (c.chat_template = 5)],
    ['a chat_template that does not parse', (_t, c) => (c.chat_template = '{{ (1 }}')],
    ['an added token that is null', (t) => ((t.added_tokens as unknown[])[0] = null)],
    ['a pre_tokenizer of the wrong type', (t) => (t.pre_tokenizer = 0)],
    ['an added token that is 0', (t) => ((t.added_tokens as unknown[])[0] = 0)],
  ];
  for (const [name, edit] of cases) {
    it(`refuses ${name} at load, naming the files`, () => {
      const dir = broken(name.replace(/\W+/g, '-'), edit);
      let thrown: unknown;
      try {
        Tokenizer.fromDir(dir);
      } catch (e) {
        thrown = e;
      }
      expect(thrown).toBeInstanceOf(Error);
      // A plain Error of ours, not a TypeError from inside a library.
      expect((thrown as Error).name).toBe('Error');
      expect((thrown as Error).message).toContain(`${join(dir, 'tokenizer.json')} (with ${join(dir, 'tokenizer_config.json')}): cannot build the tokenizer (`);
    });
  }

  it('still loads the shipped tokenizer', () => {
    expect(Tokenizer.fromDir(model).encode('hello').length).toBeGreaterThan(0);
  });
});

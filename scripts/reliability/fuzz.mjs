#!/usr/bin/env node
// The bounded fuzz run: builds the libFuzzer targets of native/core/fuzz with clang into
// build-fuzz/ (-DJFA_FUZZ=ON; no libtorch needed), runs each from its committed corpus for
// JFA_FUZZ_SECONDS (default 60), then the JS fuzzer (fuzz-js.mjs) on each of its targets for
// JFA_FUZZ_JS_SECONDS (default 30). New inputs go to build-fuzz/work/<target> (the committed corpus
// is only read); a crash is saved to build-fuzz/artifacts/ and fails the run.
// Prints "fuzz: N targets, N runs, N crashes" last; exits non-zero on any crash or failure.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const out = join(root, 'build-fuzz');
const artifacts = join(out, 'artifacts');
const cppSeconds = Number(process.env.JFA_FUZZ_SECONDS ?? 60);
const jsSeconds = Number(process.env.JFA_FUZZ_JS_SECONDS ?? 30);
const CPP_TARGETS = ['safetensors_header', 'llama_config', 'json'];
const JS_TARGETS = ['jsonl', 'tokenizer'];
const has = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;

let runs = 0;
let crashes = 0;
let failures = 0; // targets that crashed or could not run
const lines = [];
const done = () => {
  const targets = CPP_TARGETS.length + JS_TARGETS.length;
  for (const l of lines) console.log(l);
  console.log(`fuzz: ${targets - failures} of ${targets} targets clean`);
  console.log(`fuzz: ${targets} targets, ${runs} runs, ${crashes} crashes`);
  process.exit(failures ? 1 : 0);
};

// --- C++ targets -----------------------------------------------------------------------------
if (!has('clang++')) {
  lines.push('fuzz: clang++ not found: the C++ targets need clang and libFuzzer (Debian: apt-get install clang libclang-rt-14-dev; setup does it when JFA_RELIABILITY=1)');
  failures += CPP_TARGETS.length;
} else {
  const configure = [
    '-S', root, '-B', out, '-DJFA_FUZZ=ON', '-DCMAKE_BUILD_TYPE=Release', '-DCMAKE_CXX_COMPILER=clang++', '-DCMAKE_C_COMPILER=clang',
    ...(has('ninja') && !existsSync(join(out, 'Makefile')) ? ['-G', 'Ninja'] : []),
  ];
  const built =
    spawnSync('cmake', configure, { cwd: root, stdio: 'inherit' }).status === 0 &&
    spawnSync('cmake', ['--build', out, '--parallel', '2'], { cwd: root, stdio: 'inherit' }).status === 0;
  if (!built) {
    lines.push('fuzz: building the libFuzzer targets failed (see above)');
    failures += CPP_TARGETS.length;
  } else {
    rmSync(artifacts, { recursive: true, force: true });
    mkdirSync(artifacts, { recursive: true });
    for (const target of CPP_TARGETS) {
      const work = join(out, 'work', target);
      mkdirSync(work, { recursive: true });
      const dir = join(root, 'native', 'core', 'fuzz');
      const r = spawnSync(
        join(out, 'native', 'core', 'fuzz', `fuzz_${target}`),
        [
          `-max_total_time=${cppSeconds}`, '-rss_limit_mb=2048', '-timeout=10', '-max_len=16384', '-print_final_stats=1',
          `-dict=${join(dir, `${target}.dict`)}`, `-artifact_prefix=${join(artifacts, `${target}-`)}`,
          work, join(dir, 'corpus', target),
        ],
        // libFuzzer logs every new input: a minute can pass the default 1 MiB, which would kill it.
        { cwd: root, encoding: 'utf8', maxBuffer: 512 * 2 ** 20 },
      );
      const log = `${r.stdout ?? ''}${r.stderr ?? ''}`;
      const execs = Number(/stat::number_of_executed_units:\s*(\d+)/.exec(log)?.[1] ?? 0);
      const found = readdirSync(artifacts).filter((f) => f.startsWith(`${target}-`));
      runs += execs;
      if (r.status !== 0 || found.length) {
        crashes += Math.max(1, found.length);
        failures += 1;
        // libFuzzer's report: the sanitizer or check message and the stack.
        console.error(log.split('\n').filter((l) => !/^#\d+\s+(NEW|REDUCE|pulse|INITED)/.test(l)).slice(-60).join('\n'));
        const how = r.error ? ` (${r.error.message})` : r.signal ? ` (killed by ${r.signal})` : '';
        lines.push(`fuzz: ${target}: CRASH${how}; input(s): ${found.map((f) => join(artifacts, f)).join(', ') || '(none saved)'}`);
      } else {
        const cov = /cov: (\d+)/.exec(log.split('\n').filter((l) => /^#\d+/.test(l)).at(-1) ?? '')?.[1] ?? '?';
        lines.push(`fuzz: ${target}: ${execs} runs in ${cppSeconds} s, coverage ${cov} edges, no crash`);
      }
    }
  }
}

// --- JS targets ------------------------------------------------------------------------------
for (const target of JS_TARGETS) {
  const r = spawnSync(
    process.execPath,
    [join(root, 'scripts', 'reliability', 'fuzz-js.mjs'), target, '--seconds', String(jsSeconds), '--artifacts', artifacts],
    // A hang inside one input would never return: the whole target gets a hard deadline.
    { cwd: root, encoding: 'utf8', timeout: (jsSeconds + 120) * 1000, maxBuffer: 64 * 2 ** 20 },
  );
  process.stderr.write(r.stderr ?? '');
  let summary;
  try {
    summary = JSON.parse((r.stdout ?? '').trim().split('\n').at(-1));
  } catch {
    summary = undefined;
  }
  if (!summary) {
    crashes += 1;
    failures += 1;
    lines.push(`fuzz: ${target} (js): died without a summary (${r.error?.message ?? `exit ${r.status ?? r.signal}`})`);
    continue;
  }
  runs += summary.runs;
  crashes += summary.crashes;
  if (summary.crashes || r.status !== 0) failures += 1;
  lines.push(`fuzz: ${target} (js): ${summary.runs} runs in ${summary.seconds} s, ${summary.crashes ? `${summary.crashes} CRASHES, inputs in ${artifacts}` : 'no crash'}`);
}
done();

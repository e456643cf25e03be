#!/usr/bin/env node
// The `jfa` command. Each subcommand lives in its own module; this file only wires them up.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { Command, InvalidArgumentError } from 'commander';

import { packageRoot } from '../locate.js';
import { runDemo } from './demo.js';
import { doctor, formatChecks } from './doctor.js';
import { runGenerate } from './generate.js';

const pkg = JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8')) as { version: string };

const program = new Command()
  .name('jfa')
  .description('Joint Flashback Adaptation: forgetting-resistant LoRA fine-tuning, computed in libtorch')
  .version(pkg.version)
  .showHelpAfterError();

program
  .command('doctor')
  .description('show what jfa-torch found (libtorch, FAISS, the addon) and how to fix what is missing')
  .option('--json', 'machine-readable output')
  .action((opts: { json?: boolean }) => {
    const checks = doctor();
    console.log(opts.json ? JSON.stringify(checks, null, 2) : formatChecks(checks));
    if (checks.some((c) => !c.ok && c.name !== 'python reference')) process.exitCode = 1;
  });

program
  .command('demo')
  .description('the main job: today the native layer walkthrough (the JFA fine-tuning demo comes with the trainer)')
  .option('--json', 'machine-readable output')
  .action(async (opts: { json?: boolean }) => {
    await runDemo({ json: Boolean(opts.json) });
  });

const positiveInt = (name: string) => (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`${name} must be a positive integer`);
  return n;
};
const number = (name: string, min: number, max: number) => (v: string) => {
  const n = Number(v);
  if (!Number.isFinite(n) || n < min || n > max) throw new InvalidArgumentError(`${name} must be a number in [${min}, ${max}]`);
  return n;
};

program
  .command('generate')
  .description('continue a prompt with a model directory (Hugging Face layout), optionally with a PEFT adapter')
  .requiredOption('--model <dir>', 'model directory (config.json, model.safetensors, tokenizer.json)')
  .option('--adapter <dir>', 'LoRA adapter directory (PEFT layout)')
  .requiredOption('--prompt <text...>', 'prompt(s); several are generated as one batch')
  .option('--max-new-tokens <n>', 'tokens to generate at most', positiveInt('--max-new-tokens'), 64)
  .option('--temperature <t>', '0 for greedy', number('--temperature', 0, 100), 0)
  .option('--top-p <p>', 'nucleus sampling mass', number('--top-p', 0.000001, 1), 1)
  .option('--seed <n>', 'sampling seed', positiveInt('--seed'))
  .option('--chat', "wrap the prompt in the tokenizer's chat template")
  .option('--dtype <dtype>', 'float32 or bfloat16', 'float32')
  .option('--json', 'machine-readable output')
  .action(async (opts) => {
    if (opts.dtype !== 'float32' && opts.dtype !== 'bfloat16') throw new Error(`--dtype must be float32 or bfloat16, got '${opts.dtype}'`);
    await runGenerate(opts);
  });

program.parseAsync().catch((e: unknown) => {
  console.error(`jfa: ${(e as Error).message.replace(/\n- ?/g, ' ')}`);
  process.exitCode = 1;
});

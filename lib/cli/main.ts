#!/usr/bin/env node
// The `jfa` command. Each subcommand lives in its own module; this file only wires them up.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { Command } from 'commander';

import { packageRoot } from '../locate.js';
import { runDemo } from './demo.js';
import { doctor, formatChecks } from './doctor.js';

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

program.parseAsync().catch((e: unknown) => {
  console.error(`jfa: ${(e as Error).message.replace(/\n- ?/g, ' ')}`);
  process.exitCode = 1;
});

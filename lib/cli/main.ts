#!/usr/bin/env node
// The `jfa` command. Each subcommand lives in its own module; this file only wires them up.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { Command, InvalidArgumentError } from 'commander';
import { z } from 'zod';

import { IMPORT_FORMATS, type ImportFormat } from '../data/importers/index.js';
import { checkDevice } from '../device.js';
import { KEEP_BEST } from '../jfa/evals.js';
import { METHODS } from '../jfa/methods.js';
import { TRAIN_DEFAULTS } from '../jfa/plan.js';
import { LATENT_POOL_FILE } from '../jfa/pool.js';
import { GGUF_TENSOR_TYPES } from '../model/gguf.js';
import { packageRoot } from '../locate.js';
import { runFlashbacks, runImport } from './data.js';
import { demoSchema, runDemo } from '../bench/demo.js';
import { ROUNDS_METHODS, runRoundsDemo } from '../bench/rounds.js';
import { doctor, formatChecks } from './doctor.js';
import { runSetupTorch } from './setup-torch.js';
import { runStudy, STUDIES, studySchema } from '../bench/study.js';
import { runExportGguf, runMerge } from './export.js';
import { runGenerate } from './generate.js';
import { LATENT_CHOICES, type LatentChoice } from './latent.js';
import { evalSchema, pretrainSchema, probeSchema, runEval, runPretrain, runProbe, runTrain, trainDefaults, trainSchema, withConfig } from './train.js';

const pkg = JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8')) as { version: string };

const program = new Command()
  .name('jfa')
  .description('Joint Flashback Adaptation: forgetting-resistant LoRA fine-tuning, computed in libtorch')
  .version(pkg.version)
  .showHelpAfterError('hint: see jfa --help');

program
  .command('doctor')
  .description('show what jfa-torch found (libtorch, FAISS, the addon) and how to fix what is missing')
  .option('--json', 'machine-readable output')
  .option('--fix', 'when libtorch is missing, install it as `jfa setup-torch` does, then check again')
  .action((opts: { json?: boolean; fix?: boolean }) => {
    let checks = doctor();
    const torchMissing = checks.some((c) => !c.ok && (c.name === 'libtorch' || (c.name === 'addon' && c.fix?.includes('setup-torch'))));
    if (opts.fix && torchMissing) {
      if (!opts.json) console.log(formatChecks(checks));
      runSetupTorch({ quiet: opts.json });
      checks = doctor();
    }
    console.log(opts.json ? JSON.stringify(checks, null, 2) : formatChecks(checks));
    if (checks.some((c) => !c.ok && c.name !== 'python reference')) process.exitCode = 1;
  });

program
  .command('setup-torch')
  .description('install the torch the addon was built against into a per-user cache venv with pip, where jfa finds it')
  .option('--python <path>', 'Python that creates the venv (default $PYTHON, else python3)')
  .option('--force', 'reinstall torch even when it is there')
  .action((opts: { python?: string; force?: boolean }) => {
    runSetupTorch(opts);
  });

program
  .command('demo')
  .description('the main job: from the shipped base model, fine-tune with sft, flashback and jfa on the generated benchmark, evaluate, and write report.html')
  .option('--out <dir>', 'working directory: data/, runs/, results.json, report.html (default jfa-demo)')
  .option('--methods <m...>', `methods to compare: ${METHODS.join(' ')}, or all (default sft flashback jfa jfa-no-latent)`)
  .option('--seed <n>', 'seed of the first run (new-task order, flashback sample, initialisation)', (v: string) => Number(v))
  .option('--seeds <n>', 'runs of every method, seeds seed..seed+n-1; the table shows mean ± sd', (v: string) => Number(v))
  .option('--pretrain', 'pretrain the base model (into <out>/base, cached) instead of using the shipped one')
  .option('--rounds <n>', "continual rounds: deal the new tasks into n rounds, train each method round by round, report the accuracy matrix, BWT and forgetting", (v: string) => Number(v))
  .option('--stack', "with --rounds: keep each round's adapter frozen beneath the next")
  .option('--merge', "with --rounds: merge each round's adapter into the base before the next (default)")
  .option('--fresh', 'with --pretrain: pretrain again even when a cached base matches')
  .option('--nproc <n>', 'data-parallel: run each training on n local processes (c10d, Gloo)', (v: string) => Number(v))
  .option('--device <device>', 'cpu (default), cuda or cuda:N: where every model trains and is evaluated')
  .option('--config <file>', 'options as JSON or YAML, including base, train and eval sections (flags override)')
  .option('--json', 'machine-readable output (results.json on stdout, no progress)')
  .action(async (flags) => {
    const { pretrain, ...rest } = flags as { pretrain?: boolean; config?: string };
    const options = withConfig(demoSchema, rest);
    if (pretrain) options.base.pretrain = true;
    // Rounds train every method T times: by default the three the issue compares, unless methods were given.
    if (options.rounds !== undefined && withConfig(z.object({ methods: z.unknown().optional() }).passthrough(), rest).methods === undefined) options.methods = [...ROUNDS_METHODS];
    checkDevice(options.device, 'jfa demo'); // before any data is written or model read
    await (options.rounds === undefined ? runDemo(options) : runRoundsDemo(options));
  });

program
  .command('study')
  .description("a sweep of the paper's studies on the demo's benchmark: flashbacks per suite, alpha, the latent pool's shape, or PCGrad")
  .argument('<study>', `one of ${STUDIES.join(', ')}`)
  .option('--out <dir>', 'working directory (default jfa-study-<study>)')
  .option('--seed <n>', 'seed of the first run', (v: string) => Number(v))
  .option('--seeds <n>', 'runs per point, seeds seed..seed+n-1', (v: string) => Number(v))
  .option('--device <device>', 'cpu (default), cuda or cuda:N')
  .option('--config <file>', "the demo's options as JSON or YAML (base, train, eval sections)")
  .option('--json', 'machine-readable output')
  .action(async (study: string, flags) => {
    const options = withConfig(studySchema, { ...flags, study });
    checkDevice(options.device, 'jfa study');
    await runStudy(options);
  });

const LATENT_HELP = `the adapter's ${LATENT_POOL_FILE}: auto (use it unless trained in 'drop' mode) | on | off`;
const latentChoice = (v: string) => {
  if (!(LATENT_CHOICES as readonly string[]).includes(v)) throw new InvalidArgumentError(`--latent must be ${LATENT_CHOICES.join(', ')}`);
  return v as LatentChoice;
};

const positiveInt = (name: string) => (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`${name} must be a positive integer`);
  return n;
};
const nonNegativeInt = (name: string) => (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError(`${name} must be a non-negative integer`);
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
  .option('--adapter <dir>', 'LoRA adapter directory (PEFT layout), and the latent pool saved in it (see --latent)')
  .requiredOption('--prompt <text...>', 'prompt(s); several are generated as one batch')
  .option('--max-new-tokens <n>', 'tokens to generate at most', positiveInt('--max-new-tokens'), 64)
  .option('--temperature <t>', '0 for greedy', number('--temperature', 0, 100), 0)
  .option('--top-p <p>', 'nucleus sampling mass', number('--top-p', 0.000001, 1), 1)
  .option('--top-k <k>', 'sample from the k most likely tokens only (0: off)', nonNegativeInt('--top-k'), 0)
  .option('--repetition-penalty <x>', "transformers' repetition_penalty: tokens already in the sequence lose likelihood (1: off)", number('--repetition-penalty', 0.000001, 100), 1)
  .option('--stop <text...>', 'stop strings: a sequence ends before the first of them it generates')
  .option('--seed <n>', 'sampling seed', positiveInt('--seed'))
  .option('--chat', "wrap the prompt in the tokenizer's chat template")
  .option('--latent <when>', LATENT_HELP, latentChoice, 'auto')
  .option('--dtype <dtype>', 'float32 or bfloat16', 'float32')
  .option('--device <device>', "cpu, cuda or cuda:N (a CUDA libtorch and a GPU)", 'cpu')
  .option('--json', 'machine-readable output')
  .action(async (opts) => {
    if (opts.dtype !== 'float32' && opts.dtype !== 'bfloat16') throw new Error(`--dtype must be float32 or bfloat16, got '${opts.dtype}'`);
    await runGenerate(opts);
  });

program
  .command('merge')
  .description("fold a LoRA adapter (a continued run's with all its rounds) into its base and write a Hugging Face model folder")
  .requiredOption('--model <dir>', 'base model directory (Hugging Face layout)')
  .requiredOption('--adapter <dir>', "adapter directory (PEFT layout); one trained with a 'retrieve' latent pool is refused")
  .requiredOption('--out <dir>', 'model folder to write (must not exist)')
  .option('--json', 'machine-readable output')
  .action(async (opts) => runMerge(opts));

program
  .command('export')
  .description('write a model (with an adapter folded in) in a format other runtimes load')
  .command('gguf')
  .description("a GGUF file for llama.cpp, Ollama and node-llama-cpp: the 'llama' architecture with its byte-level BPE tokenizer")
  .requiredOption('--model <dir>', 'base model directory (Hugging Face layout)')
  .option('--adapter <dir>', "adapter directory (PEFT layout) to fold in first; one trained with a 'retrieve' latent pool is refused")
  .requiredOption('--out <file>', '.gguf file to write (must not exist)')
  .option('--type <type>', `element type of the weight matrices: ${GGUF_TENSOR_TYPES.join(' | ')} (norms stay f32)`, 'f16')
  .option('--as-adapter', "write --adapter alone as a GGUF LoRA adapter (f32) for llama.cpp's --lora on a GGUF of the base")
  .option('--json', 'machine-readable output')
  .action(async (opts) => runExportGguf(opts));

const kebab = (name: string) => name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

const num = (name: string) => (v: string) => {
  const n = Number(v);
  if (!Number.isFinite(n)) throw new InvalidArgumentError(`${name} must be a number`);
  return n;
};

const json = (name: string) => (v: string): unknown => {
  try {
    return JSON.parse(v);
  } catch (e) {
    throw new InvalidArgumentError(`${name} must be JSON (${(e as Error).message})`);
  }
};

/** Options pretrain and train share. */
const trainingOptions = (c: Command) =>
  c
    .option('--epochs <n>', 'epochs', num('--epochs'))
    .option('--lr <x>', 'peak learning rate', num('--lr'))
    .option('--max-tokens <n>', 'tokens per example at most', num('--max-tokens'))
    .option('--micro-batch <n>', 'examples per micro-batch', num('--micro-batch'))
    .option('--seed <n>', 'seed', num('--seed'))
    .option('--config <file>', 'options as JSON or YAML (flags override)')
    .option('--json', 'machine-readable output');

trainingOptions(program
  .command('pretrain')
  .description('create a small Llama and train it from scratch (default data: fresh generated records in phases: finding words by content, lookups, copying, then old suites and skills mixed); resumable; writes a model card with probes and suite scores')
  .option('--out <dir>', 'model directory to write')
  .option('--data <files...>', 'JSONL files of {task, instruction, input, output} records')
  .option('--hidden-size <n>', 'hidden size', num('--hidden-size'))
  .option('--layers <n>', 'decoder layers', num('--layers'))
  .option('--heads <n>', 'attention heads', num('--heads'))
  .option('--merges <n>', 'BPE merges to learn for the tokenizer', num('--merges'))
  .option('--split-spaces', 'no BPE merge takes the space: every space is a token, and a word is the same tokens after a space, a newline or "="')
  .option('--init-std <x>', 'standard deviation of the initial weights (default 0.02)', num('--init-std'))
  .option('--attention-init-std <x>', "standard deviation of the attention's initial query and key weights (default: --init-std)", num('--attention-init-std'))
  .option('--init-from <dir>', "start from this model, or from a pretraining run's folder (its last checkpoint), instead of random weights: its shape and tokenizer replace --hidden-size, --layers, --heads, --merges and the inits")
  .option('--phases <json>', 'generated data: the curriculum as JSON, [{"steps": n, "mix": {"old": x, "skills": x, "inContext": x, "copy": x, "named": {"lookup": x, ...}}}, ...]; the last phase runs to --steps (default: the shipped base\'s, docs/demo.md)', json('--phases'))
  .option('--old-train-per-suite <n>', "generated data: the suite's training records of each old suite (replay's old data)", num('--old-train-per-suite'))
  .option('--data-seed <n>', 'generated data: seed of the suites', num('--data-seed'))
  .option('--steps <n>', 'generated data: steps in all, each of fresh records', num('--steps'))
  .option('--eval-per-suite <n>', 'generated data: held-out records per old suite scored for the model card (0: none)', num('--eval-per-suite'))
  .option('--warmup-steps <n>', 'steps of linear warm-up before the cosine decay (default 200)', num('--warmup-steps'))
  .option('--probes <n>', 'probe records per skill scored for the model card (0: none)', num('--probes'))
  .option('--probe-every <n>', 'score the probes every n steps into <checkpoint-dir>/metrics.jsonl (0: never)', num('--probe-every'))
  .option('--checkpoint-dir <dir>', 'where the run keeps its checkpoint and metrics (default <out>.pretrain); removed but for metrics when done')
  .option('--checkpoint-every <n>', 'steps between checkpoints (default 500)', num('--checkpoint-every'))
  .option('--pause-after <n>', 'stop after this step with a checkpoint; --resume continues (pretraining in sittings; Ctrl-C does the same at the next step)', num('--pause-after'))
  .option('--resume', 'continue the run in --checkpoint-dir, bit-identically'))
  .action(async (flags) => runPretrain(withConfig(pretrainSchema, flags)));

program
  .command('probe')
  .description('score a model on the general skills a base needs (copy, lookup, word-at, option letter, count, format): one line per probe, greedy exact match')
  .option('--model <dir>', 'model directory')
  .option('--adapter <dir>', 'LoRA adapter directory (PEFT layout)')
  .option('--per-probe <n>', 'held-out records per probe (default 100)', num('--per-probe'))
  .option('--batch <n>', 'prompts per batch (default 50)', num('--batch'))
  .option('--json', 'machine-readable output')
  .action(async (flags) => runProbe(withConfig(probeSchema, flags)));

trainingOptions(program
  .command('train')
  .description('LoRA fine-tuning on new tasks: sft, replay, flashback, slm, self-replay, jfa or one of its ablations')
  .option('--model <dir>', 'base model directory')
  .option('--data <file>', 'new-task JSONL')
  .option('--flashbacks <file>', 'flashback prompts JSONL (flashback, self-replay, jfa)')
  .option('--replay <file>', 'old-task training JSONL (replay)')
  .option('--method <m>', `${METHODS.join(' | ')} (each a preset of flashbacks, latent tasks, PCGrad, replay and self-replay; docs/training.md)`)
  .option('--out <dir>', 'output directory: adapter/, metrics.jsonl, checkpoints')
  .option('--latent', 'use latent tasks where the method has them (default)')
  .option('--no-latent', 'ablation without latent tasks')
  .option('--latent-mode <mode>', "jfa: retrieve (the pool serves with the adapter) | drop (the adapter serves alone)")
  .option('--latent-dropout <p>', "jfa: probability that a micro-batch trains without its latent increments (default 0.5 with drop, 0 with retrieve)", num('--latent-dropout'))
  .option('--plain-sft-weight <w>', 'jfa: weight of an extra SFT loss with the latent increments off (default 0)', num('--plain-sft-weight'))
  .option('--pcgrad', "combine micro-batch gradients with PCGrad (default: the method's)")
  .option('--no-pcgrad', 'ablation: plain mean of micro-batch gradients')
  .option('--alpha <x>', 'weight of the flashback divergence', num('--alpha'))
  .option('--self-replay-max-new-tokens <n>', `self-replay: tokens the base generates per flashback answer at most (default ${TRAIN_DEFAULTS.selfReplayMaxNewTokens}); kept in <out>/self-replay.jsonl for --resume`, num('--self-replay-max-new-tokens'))
  .option('--ewc-lambda <x>', `ewc: weight of the Fisher-weighted penalty on the adapters' weight change (default ${TRAIN_DEFAULTS.ewcLambda})`, num('--ewc-lambda'))
  .option('--ewc-samples <n>', `ewc: flashback prompts the Fisher is estimated on (default ${TRAIN_DEFAULTS.ewcSamples}); kept in <out>/ewc-fisher.safetensors for --resume`, num('--ewc-samples'))
  .option('--olora-lambda <x>', `o-lora: weight of the orthogonality to the earlier rounds' A (default ${TRAIN_DEFAULTS.oloraLambda}; a first round is plain SFT)`, num('--olora-lambda'))
  .option('--pace-sigma <x>', `pace: standard deviation of the noise on the adapters' outputs (default ${TRAIN_DEFAULTS.paceSigma})`, num('--pace-sigma'))
  .option('--pace-lambda <x>', `pace: weight of the consistency between two perturbed passes (default ${TRAIN_DEFAULTS.paceLambda})`, num('--pace-lambda'))
  .option('--accumulation <n>', 'new-task micro-batches per step', num('--accumulation'))
  .option('--r <n>', 'LoRA rank', num('--r'))
  .option('--lora-alpha <x>', 'LoRA alpha', num('--lora-alpha'))
  .option('--checkpoint-every <n>', 'steps between checkpoints', num('--checkpoint-every'))
  .option('--max-steps <n>', 'end the run after this many steps, with its adapter (as transformers\' max_steps)', num('--max-steps'))
  .option('--pause-after <n>', 'stop after this step with a checkpoint; --resume continues (Ctrl-C does the same at the next step)', num('--pause-after'))
  .option('--resume', 'continue from the checkpoint in --out')
  .option('--tensorboard <dir>', 'also log each step to TensorBoard event files in <dir> (tensorboard --logdir <dir>)')
  .option('--activation-checkpointing', 'keep only each layer\'s input and recompute the layer in the backward: less memory, one more forward pass')
  .option('--continue-from <run>', 'a finished run folder (an earlier --out): train the next round on the model after it (--model defaults to its base)')
  .option('--merge', "with --continue-from: fold the earlier rounds' adapters into the weights (default)")
  .option('--stack', "with --continue-from: keep the earlier rounds' adapters frozen beneath the new one")
  .option('--flashback-budget <n>', 'with --continue-from: flashbacks in all, spread over the old suites and the earlier rounds (default: as many as --flashbacks)', num('--flashback-budget'))
  .option('--nproc <n>', 'data-parallel: start n local worker processes (c10d: Gloo on the CPU, NCCL on GPUs, one per rank); like torchrun --nproc-per-node', num('--nproc'))
  .option('--rank <n>', 'data-parallel: this process\'s rank (default: $RANK)', num('--rank'))
  .option('--world-size <n>', 'data-parallel: processes in the run (default: $WORLD_SIZE)', num('--world-size'))
  .option('--master-addr <host>', "data-parallel: rank 0's host, which serves the rendezvous store (default: $MASTER_ADDR or 127.0.0.1)")
  .option('--master-port <n>', 'data-parallel: its port (default: $MASTER_PORT, 29500; with --nproc a free port)', num('--master-port'))
  .option('--dist-timeout-ms <ms>', 'data-parallel: how long ranks wait for each other before failing (default 60000)', num('--dist-timeout-ms')))
  .option('--device <device>', 'cpu (default), cuda or cuda:N: where the model trains (a CUDA libtorch and a GPU)')
  .option('--precision <p>', "fp32 (default) or bf16: the base model's dtype; losses accumulate in fp32")
  .option('--eval-every <n>', 'evaluate at step 0, every n steps and after the last, on --eval-old and/or --eval-new: metrics.jsonl, the progress line, TensorBoard', num('--eval-every'))
  .option('--eval-old <file>', 'old-suite JSONL with "answer": accuracy (the mean of the suites\')')
  .option('--eval-new <file>', 'new-task JSONL: ROUGE-L against the outputs')
  .option('--eval-limit <n>', 'records of each eval file scored at most, spread over its suites or tasks', num('--eval-limit'))
  .option('--eval-batch <n>', 'prompts generated together when evaluating', num('--eval-batch'))
  .option('--eval-max-new-tokens <n>', 'tokens generated per prompt at most when evaluating', num('--eval-max-new-tokens'))
  .option('--keep-best <rule>', `${KEEP_BEST.join(' | ')}: the run's adapter is the checkpoint of the best evaluation (old accuracy, new ROUGE-L, or ROUGE-L minus forgetting, in points)`)
  .option('--max-forgetting <points>', "stop once old-task accuracy is more than this many points below step 0's; the run ends with the kept checkpoint (--keep-best's, or the last evaluation within the limit)", num('--max-forgetting'))
  .addHelpText('after', `\nDefaults (the library's train() has the same; PCGrad and latent tasks come with the method):\n  ${Object.entries(trainDefaults()).map(([k, v]) => (typeof v === 'boolean' ? `--${v ? '' : 'no-'}${kebab(k)}` : `--${kebab(k)} ${String(v)}`)).join(', ')}`)
  .action(async (flags) => runTrain(withConfig(trainSchema, flags)));

program
  .command('eval')
  .description('score a model (and adapter) on a JSONL file by greedy generation')
  .option('--model <dir>', 'model directory')
  .option('--adapter <dir>', 'LoRA adapter directory (PEFT layout), and the latent pool saved in it (see --latent)')
  .option('--data <file>', 'JSONL records (accuracy needs "answer")')
  .option('--metric <m>', 'rougeL | em | bleu | accuracy | auto (per format: accuracy for gsm8k, svamp, arc, mmlu-pro, bbh; ROUGE-L and BLEU-4 for superni, chat)')
  .option('--format <name>', `with --metric auto: score every record as this format (${IMPORT_FORMATS.join(', ')}), instead of the format recorded on it`)
  .option('--latent <when>', LATENT_HELP)
  .option('--max-new-tokens <n>', 'tokens to generate at most', num('--max-new-tokens'))
  .option('--batch <n>', 'prompts per batch', num('--batch'))
  .option('--config <file>', 'options as JSON or YAML (flags override)')
  .option('--json', 'machine-readable output')
  .option('--device <device>', 'cpu (default), cuda or cuda:N')
  .option('--dtype <dtype>', 'float32 (default) or bfloat16: the base weights; adapters and latent pools stay float32')
  .action(async (flags) => runEval(withConfig(evalSchema, flags)));

const data = program.command('data').description("datasets in: the paper's published formats to jfa's JSONL, and flashbacks from old-task files");

const importFormat = (v: string) => {
  if (!(IMPORT_FORMATS as readonly string[]).includes(v)) throw new InvalidArgumentError(`--format must be one of ${IMPORT_FORMATS.join(', ')}`);
  return v as ImportFormat;
};

data
  .command('import')
  .description('convert files of a published dataset format to JSONL records; what cannot be used is reported as file:line: reason')
  .argument('<in...>', 'input files (superni: task JSON files; gsm8k, arc, mmlu-pro, chat: JSONL; svamp: a JSON array or JSONL; bbh: task JSON files or JSONL)')
  .requiredOption('--format <name>', `one of ${IMPORT_FORMATS.join(', ')}`, importFormat)
  .requiredOption('--out <file>', 'JSONL to write (with a task split: the training tasks)')
  .option('--task <name>', 'task name (old formats: the suite, default the format name; chat: for lines without a task)')
  .option('--max-per-task <n>', 'superni: instances per task at most, a seeded sample (default 100, the paper; 0: all)', nonNegativeInt('--max-per-task'))
  .option('--examples <k>', 'superni: positive examples appended to the definition (default 0)', nonNegativeInt('--examples'))
  .option('--test-tasks <file>', 'held-out test task names, one per line (e.g. SuperNI splits/default/test_tasks.txt); they go to --test-out')
  .option('--split <fraction>', 'hold out this fraction of the tasks, chosen by --seed; they go to --test-out', number('--split', 0, 1))
  .option('--test-out <file>', 'JSONL of the held-out test tasks')
  .option('--seed <n>', 'seed of the instance sample and of --split (default 0)', nonNegativeInt('--seed'))
  .option('--model <dir>', "chat: apply this model's chat template (tokenizer_config.json) instead of jfa's")
  .option('--json', 'machine-readable output, with every skip')
  .action((inputs: string[], opts) => runImport({ ...opts, inputs }));

data
  .command('flashbacks')
  .description('draw N distinct prompts per suite from old-task JSONL files into a flashback file, deterministic by seed')
  .argument('<in...>', 'old-task JSONL files (jfa records, e.g. from jfa data import)')
  .requiredOption('--per-suite <n>', 'prompts per suite (the paper: 32 per dataset)', positiveInt('--per-suite'))
  .requiredOption('--out <file>', 'flashback JSONL to write')
  .option('--seed <n>', 'seed of the draw (default 0)', nonNegativeInt('--seed'))
  .option('--by <what>', "suite: task names up to the first '/' (mmlu-pro/law -> mmlu-pro; default) | task: whole task names", (v: string) => {
    if (v !== 'suite' && v !== 'task') throw new InvalidArgumentError('--by must be suite or task');
    return v;
  })
  .option('--json', 'machine-readable output')
  .action((inputs: string[], opts) => runFlashbacks({ ...opts, inputs }));

// A bad flag prints its error and one hint line, not the whole usage text, which buried the error.
for (const command of program.commands) command.showHelpAfterError(`hint: see jfa ${command.name()} --help`);
for (const command of data.commands) command.showHelpAfterError(`hint: see jfa data ${command.name()} --help`);

program.parseAsync().catch((e: unknown) => {
  // One line: the first problem, and how many more there are (data errors list every bad line).
  const problems = (e as { problems?: string[] }).problems ?? [(e as Error).message.replace(/\n- ?/g, ' ')];
  const more = problems.length > 1 ? ` (and ${problems.length - 1} more problem${problems.length > 2 ? 's' : ''})` : '';
  console.error(`jfa: ${problems[0]!.split('\n')[0]}${more}`);
  process.exitCode = 1;
});

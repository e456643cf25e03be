// A rank other than 0 of an in-process data-parallel train() (startPeers in launch.ts): reads the
// spec file (argv[2]) and its rank (argv[3]), trains alongside rank 0, prints nothing on success.
import { readFileSync } from 'node:fs';

import { type TrainData, type TrainOptions, train } from '../jfa/trainer.js';
import { LlamaModel } from '../model/llama.js';
import { Tokenizer } from '../model/tokenizer.js';
import { type PeerSpec } from '../bench/launch.js';

try {
  const spec = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as PeerSpec;
  const rank = Number(process.argv[3]);
  using model = await LlamaModel.loadAsync(spec.model);
  const r = await train(model, Tokenizer.fromDir(spec.model), spec.data as TrainData, {
    ...(spec.options as unknown as TrainOptions),
    distributed: { rank, worldSize: spec.worldSize, masterAddr: spec.masterAddr, masterPort: spec.masterPort, timeoutMs: spec.timeoutMs },
  });
  r.pool?.dispose();
} catch (e) {
  process.stderr.write(`${(e as Error).message.split('\n')[0]}\n`);
  process.exitCode = 1;
}

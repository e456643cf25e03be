// Serves a finished run folder: loadRun() gives its base, adapter and latent pool ready to generate.
// Usage: node dist/serve.js RUN_DIR INSTRUCTION INPUT
import { loadRun, promptText } from 'jfa-torch';

const [runDir, instruction, input] = process.argv.slice(2);
if (!runDir || instruction === undefined || input === undefined) throw new Error('usage: node dist/serve.js RUN_DIR INSTRUCTION INPUT');
using run = await loadRun(runDir);
const [answer] = await run.generate([promptText({ task: '', instruction, input })], { maxNewTokens: 8, repetitionPenalty: 1.2 });
console.log(`served: ${JSON.stringify(answer?.text)} (finish: ${answer?.finishReason}; latent pool: ${run.pool ? 'yes' : 'no'})`);

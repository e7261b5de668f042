// `npm run validate:llamacpp -- --model X.gguf [--work-dir DIR] [--json]`: npuserve against llama.cpp
// on the same GGUF (runtime/bench/validate-llamacpp.ts); exits 1 when a check fails.
import { homedir } from 'node:os';
import { join } from 'node:path';

import { type CommandSpec, type FlagValues, runScript, stringFlag } from '../common/flags.js';
import { formatValidation, validateAgainstLlamaCpp } from '../runtime/bench/validate-llamacpp.js';
import { ggufTokenizer } from '../runtime/tokenizer/parity.js';

const COMMAND: CommandSpec = {
  name: 'npm run validate:llamacpp --',
  summary: 'Checks npuserve against llama.cpp on the same GGUF model (tokenizer, logits, greedy text); exits 1 when a check fails.',
  flags: [
    { name: 'model', value: 'X.gguf', required: true, description: 'the GGUF model' },
    { name: 'work-dir', value: 'DIR', default: join(homedir(), '.cache', 'npuserve', 'validate'), description: 'where converted models are kept' },
    { name: 'json', description: 'print the results as JSON' },
  ],
};

async function main(values: FlagValues): Promise<void> {
  const model = stringFlag(values, 'model')!;
  const v = await validateAgainstLlamaCpp(model, stringFlag(values, 'work-dir')!);
  console.log(values.json ? JSON.stringify(v, null, 2) : formatValidation(v, ggufTokenizer(model)));
  process.exitCode = v.passed ? 0 : 1;
}

void runScript(COMMAND, main);

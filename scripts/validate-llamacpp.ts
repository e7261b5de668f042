// `npm run validate:llamacpp -- --model X.gguf [--work-dir DIR] [--json]`: npuserve against llama.cpp
// on the same GGUF (runtime/bench/validate-llamacpp.ts); exits 1 when a check fails.
import { homedir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import { formatValidation, validateAgainstLlamaCpp } from '../runtime/bench/validate-llamacpp.js';
import { ggufTokenizer } from '../runtime/tokenizer/parity.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string' },
    'work-dir': { type: 'string', default: join(homedir(), '.cache', 'npuserve', 'validate') },
    json: { type: 'boolean', default: false },
  },
  strict: true,
});
if (!values.model) {
  console.error('usage: npm run validate:llamacpp -- --model X.gguf [--work-dir DIR] [--json]');
  process.exit(2);
}
const v = await validateAgainstLlamaCpp(values.model, values['work-dir']!);
console.log(values.json ? JSON.stringify(v, null, 2) : formatValidation(v, ggufTokenizer(values.model)));
process.exitCode = v.passed ? 0 : 1;

// `npm run validate:llamacpp -- --model X.gguf`: checks npuserve against llama.cpp (node-llama-cpp)
// on the same GGUF and exits non-zero on any difference. Today: tokenizer ids on the parity corpus.
import { parseArgs } from 'node:util';

import { compareTokenizerWithLlamaCpp, formatTokenizerParity } from '../runtime/tokenizer/parity.js';

const { values } = parseArgs({ options: { model: { type: 'string' } }, strict: true });
if (!values.model) {
  console.error('usage: npm run validate:llamacpp -- --model X.gguf');
  process.exit(2);
}
const parity = await compareTokenizerWithLlamaCpp(values.model);
console.log(formatTokenizerParity(values.model, parity));
process.exitCode = parity.mismatches.length === 0 ? 0 : 1;

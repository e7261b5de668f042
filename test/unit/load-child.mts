// A child process for tests that must watch a whole process (peak memory, a signal, a hang): loads a
// model with the engine and prints one JSON line. Usage: node --import tsx load-child.mts ACTION PATH [OPTIONS_JSON]
//   load      -> { error?, maxRssBytes }: Engine.load, then the process's peak resident memory
//   truncate  -> { before, after }: the argmax of one prompt's logits, before and after the file on
//                disk is truncated to 64 bytes under the loaded engine
import { truncateSync } from 'node:fs';

import { Engine } from '../../runtime/engine.js';

const [action, path, optionsJson] = process.argv.slice(2);
const options = optionsJson ? JSON.parse(optionsJson) : {};

async function argmax(engine: Engine): Promise<number> {
  const seq = engine.createSequence();
  const [r] = await engine.step([{ sequence: seq, tokens: [1, 415, 6233, 1117], logits: 'last', sample: false }]);
  engine.releaseSequence(seq);
  return r.logits!.indexOf(Math.max(...r.logits!));
}

if (action === 'load') {
  let error: string | undefined;
  try {
    await Engine.load(path, options);
  } catch (e) {
    error = (e as Error).message;
  }
  console.log(JSON.stringify({ error, maxRssBytes: process.resourceUsage().maxRSS * 1024 }));
} else if (action === 'truncate') {
  const engine = await Engine.load(path, options);
  const before = await argmax(engine);
  truncateSync(path, 64);
  console.log(JSON.stringify({ before, after: await argmax(engine) }));
} else {
  throw new Error(`unknown action '${action}': expected load or truncate`);
}

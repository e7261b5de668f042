// The worker thread behind PromptEncoder: builds the model's tokenizer once, then encodes the texts
// it is sent, one at a time, and answers with the ids (or the error message).
import { parentPort, workerData } from 'node:worker_threads';

import { Tokenizer, type TokenizerSpec } from '../tokenizer.js';
import type { EncodeReply, EncodeRequest } from './encoder.js';

const port = parentPort!;
const tokenizer = new Tokenizer(workerData as TokenizerSpec);
tokenizer.encode('warm-up');
port.postMessage({ id: -1, ids: new Int32Array(0) } satisfies EncodeReply);
port.on('message', (req: EncodeRequest) => {
  try {
    const ids = Int32Array.from(tokenizer.encode(req.text, { addSpecial: req.addSpecial }));
    port.postMessage({ id: req.id, ids } satisfies EncodeReply, [ids.buffer]);
  } catch (e) {
    port.postMessage({ id: req.id, error: (e as Error).message } satisfies EncodeReply);
  }
});

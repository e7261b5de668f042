// The worker thread behind jsonBody: parses large request bodies and checks their shape, answering
// with the value only when it is within the bounds (so the clone back to the server stays cheap).
import { parentPort } from 'node:worker_threads';

import { parseJson, type ParseReply } from './json-body.js';

const port = parentPort!;
port.on('message', ({ id, bytes }: { id: number; bytes: Uint8Array }) => {
  port.postMessage({ id, ...parseJson(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8')) } satisfies ParseReply);
});

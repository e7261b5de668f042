import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

import { afterEach, describe, expect, it } from 'vitest';

import { HttpTarget } from './targets.js';

/**
 * A stand-in OpenAI server streaming one text chunk per completion. `drop(n, reused)` decides, for
 * the n-th completion request (0-based) and whether its connection served one before, to close the
 * connection without answering, as a server whose keep-alive timeout fired as the request came in.
 */
async function standIn(drop: (n: number, reused: boolean) => boolean) {
  const seen = { completions: 0, connections: 0 };
  const served = new WeakSet<object>();
  const server: Server = createServer((req, res) => {
    if (req.url === '/v1/models') return void res.end(JSON.stringify({ data: [{ id: 'm', max_model_len: 64 }] }));
    const n = seen.completions++;
    const reused = served.has(req.socket);
    served.add(req.socket);
    if (drop(n, reused)) return void req.socket.destroy();
    req.resume().on('end', () => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(`data: ${JSON.stringify({ choices: [{ text: `t${n}` }] })}\n\n`);
      res.end(`data: ${JSON.stringify({ choices: [], usage: { completion_tokens: 1 } })}\n\ndata: [DONE]\n\n`);
    });
  });
  server.on('connection', () => seen.connections++);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, seen, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

const spec = { prompt: [1, 2, 3], maxTokens: 1, seed: 0 };
let servers: Server[] = [];
afterEach(() => {
  for (const s of servers) s.close();
  servers = [];
});

describe('HttpTarget', () => {
  it('sends a request again, once, when the server closed the kept-alive connection it went out on', async () => {
    const s = await standIn((n, reused) => n === 1 && reused);
    servers.push(s.server);
    const target = await HttpTarget.connect(s.url);
    expect((await target.run(spec)).outputTokens).toBe(1);
    // The second request reuses the first one's connection, which the server closes: answered on a new one.
    expect((await target.run(spec)).outputTokens).toBe(1);
    expect(s.seen.completions).toBe(3);
    target.close();
  });

  it('fails when a new connection is closed too (no retry loop), naming the error', async () => {
    const s = await standIn((n) => n >= 1);
    servers.push(s.server);
    const target = await HttpTarget.connect(s.url);
    await target.run(spec);
    await expect(target.run(spec)).rejects.toThrow(/socket hang up/);
    // The reused connection, then one new one: two tries, not more.
    expect(s.seen.completions).toBe(3);
    target.close();
  });
});

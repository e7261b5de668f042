// http(s) sources against local servers: loopback is refused unless the host is allowed, every
// redirect hop is checked by the address it resolves to, the Authorization header stays with its
// origin, a response that is not GGUF is dropped after its first bytes, sizes are capped, and no
// error message carries a byte the server sent.
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { tempFiles } from '../../test/unit/temp-files.js';
import { downloadGguf } from './download.js';

const { dir } = tempFiles('download');
const SECRET = 'root:$6$s3cr3t-hash:19000:0:99999:7:::';
const GGUF_BODY = Buffer.concat([Buffer.from('GGUF'), Buffer.from(Array.from({ length: 5000 }, (_, i) => (i * 7 + 3) % 251))]);

type Handler = (req: IncomingMessage, res: ServerResponse) => void;
const routes = new Map<string, Handler>();
const seen: Array<{ path: string; authorization?: string }> = [];
let server: Server;
let port = 0;
let closedEarly = 0;

beforeAll(async () => {
  server = createServer((req, res) => {
    seen.push({ path: req.url ?? '', authorization: req.headers.authorization });
    const route = routes.get(req.url ?? '');
    if (route) return route(req, res);
    res.writeHead(404).end(SECRET);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
  routes.set('/m.gguf', (_req, res) => res.writeHead(200, { 'content-length': GGUF_BODY.length }).end(GGUF_BODY));
  routes.set('/to-loopback-ip', (_req, res) => res.writeHead(302, { location: `http://127.0.0.1:${port}/m.gguf` }).end());
  routes.set('/to-localhost', (_req, res) => res.writeHead(302, { location: `http://localhost:${port}/m.gguf` }).end());
  routes.set('/loop', (_req, res) => res.writeHead(301, { location: '/loop' }).end());
  // Not GGUF, and it never ends: only a client that stops after the first bytes returns.
  routes.set('/shadow', (req, res) => {
    res.writeHead(200);
    res.write(SECRET);
    req.socket.on('close', () => closedEarly++);
  });
  routes.set('/huge-length', (_req, res) => {
    res.writeHead(200, { 'content-length': String(2 ** 40) });
    res.write('GGUF');
  });
  routes.set('/chunked', (_req, res) => {
    res.writeHead(200);
    res.end(GGUF_BODY);
  });
});

afterAll(() => {
  server.closeAllConnections();
  server.close();
});

const url = (path: string, host = '127.0.0.1') => `http://${host}:${port}${path}`;

function expectNoContent(message: string) {
  expect(message).not.toContain('root');
  expect(message).not.toContain('s3cr3t');
}

describe('downloading an http(s) source', () => {
  it('refuses a loopback address, and fetches it when the admin allows the host', async () => {
    await expect(downloadGguf(url('/m.gguf'), dir)).rejects.toThrow(/download of http:\/\/127\.0\.0\.1:\d+\/m\.gguf: 127\.0\.0\.1 is a loopback address; ask the cluster admin to allow this host \(--allow-host\)/);
    const path = await downloadGguf(url('/m.gguf'), dir, { allowHosts: ['127.0.0.1'] });
    expect(path).toMatch(/m\.gguf$/);
    expect(readFileSync(path).equals(GGUF_BODY)).toBe(true);
  });

  it('refuses a name that resolves to loopback, checked again at every redirect hop', async () => {
    await expect(downloadGguf(url('/m.gguf', 'localhost'), dir)).rejects.toThrow(/localhost resolves to (127\.0\.0\.1|::1), a loopback address/);
    // The first hop is allowed; the redirect's target is not, by literal address or by resolved name.
    await expect(downloadGguf(url('/to-loopback-ip', 'localhost'), dir, { allowHosts: ['localhost'] })).rejects.toThrow(/127\.0\.0\.1 is a loopback address/);
    await expect(downloadGguf(url('/to-localhost'), dir, { allowHosts: ['127.0.0.1'] })).rejects.toThrow(/localhost resolves to (127\.0\.0\.1|::1), a loopback address/);
    await expect(downloadGguf(url('/loop'), dir, { allowHosts: ['127.0.0.1'] })).rejects.toThrow(/more than 5 redirects/);
  });

  it('sends the Authorization header to its own origin only', async () => {
    seen.length = 0;
    await downloadGguf(url('/to-localhost'), dir, { allowHosts: ['127.0.0.1', 'localhost'], authorization: 'Bearer hf_token' });
    expect(seen).toEqual([
      { path: '/to-localhost', authorization: 'Bearer hf_token' },
      { path: '/m.gguf', authorization: undefined },
    ]);
  });

  it('drops a response that is not GGUF after its first bytes, without quoting them', async () => {
    const started = performance.now();
    const error = await downloadGguf(url('/shadow'), dir, { allowHosts: ['127.0.0.1'] }).catch((e: Error) => e);
    expect(error).toBeInstanceOf(Error);
    expect((error as Error).message).toMatch(/the response is not a GGUF file \(its first 4 bytes are not "GGUF"\)/);
    expectNoContent((error as Error).message);
    expect(performance.now() - started).toBeLessThan(5000);
    await new Promise((r) => setTimeout(r, 50));
    expect(closedEarly).toBe(1);
  });

  it('answers an HTTP error by its status, not its body', async () => {
    const error = (await downloadGguf(url('/missing.gguf'), dir, { allowHosts: ['127.0.0.1'] }).catch((e: Error) => e)) as Error;
    expect(error.message).toMatch(/HTTP 404 Not Found$/);
    expectNoContent(error.message);
  });

  it('caps the size: Content-Length up front, counted bytes when there is none', async () => {
    await expect(downloadGguf(url('/huge-length'), dir, { allowHosts: ['127.0.0.1'] })).rejects.toThrow(/Content-Length 1099511627776 exceeds the 68719476736-byte limit/);
    await expect(downloadGguf(url('/chunked'), dir, { allowHosts: ['127.0.0.1'], maxBytes: 1000 })).rejects.toThrow(/the response exceeds the 1000-byte limit/);
    await expect(downloadGguf(url('/m.gguf'), dir, { allowHosts: ['127.0.0.1'], maxBytes: 1000 })).rejects.toThrow(/Content-Length 5004 exceeds the 1000-byte limit/);
  });

  it('refuses credentials in the URL and schemes other than http(s)', async () => {
    await expect(downloadGguf(`http://user:pw@example.org/m.gguf`, dir)).rejects.toThrow(/credentials in the URL are not supported/);
    await expect(downloadGguf(`ftp://example.org/m.gguf`, dir)).rejects.toThrow(/ftp: is not http: or https:/);
  });
});

// The slice of the kubelet's HTTPS API the API server calls for `kubectl logs`: GET
// /containerLogs/{namespace}/{pod}/{container}[?follow=true&tailLines=N], served from the log files
// the pod runner writes (<cluster>/pods/<ns>_<pod>_<uid>/logs/<container>.log).
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { sleep } from '../kube.js';

function latestPodDir(clusterDir: string, namespace: string, pod: string): string | undefined {
  const podsDir = path.join(clusterDir, 'pods');
  const prefix = `${namespace}_${pod}_`;
  const matches = fs.existsSync(podsDir) ? fs.readdirSync(podsDir).filter((d) => d.startsWith(prefix)) : [];
  const newest = matches
    .map((d) => ({ d, mtime: fs.statSync(path.join(podsDir, d)).mtimeMs }))
    .sort((a, b) => b.mtime - a.mtime)[0];
  return newest ? path.join(podsDir, newest.d) : undefined;
}

function lastLines(text: string, n: number): string {
  const lines = text.split('\n');
  const trailing = lines[lines.length - 1] === '' ? lines.pop() : undefined;
  return lines.slice(-n).join('\n') + (trailing !== undefined ? '\n' : '');
}

async function streamLog(file: string, url: URL, res: import('node:http').ServerResponse): Promise<void> {
  const tailLines = url.searchParams.get('tailLines');
  let text = fs.readFileSync(file, 'utf8');
  if (tailLines !== null) text = lastLines(text, Number(tailLines));
  res.writeHead(200, { 'content-type': 'text/plain' });
  res.write(text);
  if (url.searchParams.get('follow') !== 'true') return void res.end();
  let offset = fs.statSync(file).size;
  let open = true;
  res.on('close', () => (open = false));
  // Follow until the client goes away, bounded to an hour.
  for (let i = 0; open && i < 7200; i++) {
    await sleep(500);
    const size = fs.statSync(file).size;
    if (size > offset) {
      const fd = fs.openSync(file, 'r');
      const chunk = Buffer.alloc(size - offset);
      fs.readSync(fd, chunk, 0, chunk.length, offset);
      fs.closeSync(fd);
      offset = size;
      res.write(chunk);
    }
  }
  res.end();
}

/** Serves container logs over HTTPS on address:0; resolves with the chosen port. */
export function startKubeletServer(clusterDir: string, address: string, log: (m: string) => void): Promise<number> {
  const pki = path.join(clusterDir, 'pki');
  const server = https.createServer(
    { cert: fs.readFileSync(path.join(pki, 'apiserver.crt')), key: fs.readFileSync(path.join(pki, 'apiserver.key')) },
    (req, res) => {
      const url = new URL(req.url ?? '/', 'https://kubelet');
      const m = /^\/containerLogs\/([^/]+)\/([^/]+)\/([^/]+)$/.exec(url.pathname);
      if (!m) {
        res.writeHead(url.pathname === '/healthz' ? 200 : 404).end(url.pathname === '/healthz' ? 'ok' : 'not supported by the npuserve node agent\n');
        return;
      }
      const [, namespace, pod, container] = m.map(decodeURIComponent);
      const dir = latestPodDir(clusterDir, namespace, pod);
      const file = dir && path.join(dir, 'logs', `${container}.log`);
      if (!file || !fs.existsSync(file)) {
        res.writeHead(404).end(`no logs of container ${container} in pod ${namespace}/${pod} on this node\n`);
        return;
      }
      streamLog(file, url, res).catch((err: Error) => {
        log(`logs ${namespace}/${pod}/${container}: ${err.message}`);
        res.destroy();
      });
    },
  );
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, address, () => resolve((server.address() as import('node:net').AddressInfo).port));
  });
}

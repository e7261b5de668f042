import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dump } from 'js-yaml';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { KubeApi } from './client.js';

let dir: string;
const saved = { ...process.env };

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'npuserve-kubeconfig-'));
  delete process.env.KUBECONFIG;
  delete process.env.KUBERNETES_SERVICE_HOST;
  delete process.env.NPUSERVE_SERVICE_ACCOUNT_DIR;
});
afterEach(() => {
  process.env = { ...saved };
  rmSync(dir, { recursive: true, force: true });
});

function kubeconfig(folder: string, doc: object): string {
  mkdirSync(join(dir, folder), { recursive: true });
  const path = join(dir, folder, 'config');
  writeFileSync(path, dump({ apiVersion: 'v1', kind: 'Config', ...doc }));
  return path;
}

describe('KubeApi.fromEnvironment', () => {
  it('merges KUBECONFIG=a:b as kubectl does: the first current-context and the first entry of a name win; relative paths follow their file', () => {
    const a = kubeconfig('a', {
      clusters: [{ name: 'prod', cluster: { server: 'https://prod.example:6443', 'certificate-authority': 'ca.crt' } }],
      contexts: [{ name: 'prod', context: { cluster: 'prod', user: 'alice' } }],
      'current-context': 'prod',
    });
    const b = kubeconfig('b', {
      clusters: [{ name: 'prod', cluster: { server: 'https://shadow.example:6443' } }, { name: 'dev', cluster: { server: 'https://dev.example:6443' } }],
      users: [{ name: 'alice', user: { exec: { apiVersion: 'client.authentication.k8s.io/v1', command: './bin/creds', args: ['--x'] } } }],
      contexts: [{ name: 'dev', context: { cluster: 'dev', user: 'alice' } }],
      'current-context': 'dev',
    });
    process.env.KUBECONFIG = `${a}:${b}`;
    const api = KubeApi.fromEnvironment();
    expect(api.server).toBe('https://prod.example:6443');
    expect(api.config.getCurrentCluster()?.caFile).toBe(join(dir, 'a', 'ca.crt'));
    expect(api.config.getCurrentUser()?.exec.command).toBe(join(dir, 'b', 'bin', 'creds'));
    expect(KubeApi.fromEnvironment({ context: 'dev' }).server).toBe('https://dev.example:6443');
  });

  it('takes --kubeconfig over KUBECONFIG, and names what is missing', () => {
    const only = kubeconfig('only', {
      clusters: [{ name: 'c', cluster: { server: 'https://only.example' } }],
      users: [{ name: 'u', user: { token: 't' } }],
      contexts: [{ name: 'x', context: { cluster: 'c', user: 'u' } }],
      'current-context': 'x',
    });
    process.env.KUBECONFIG = join(dir, 'absent');
    expect(KubeApi.fromEnvironment({ kubeconfig: only }).server).toBe('https://only.example');
    expect(() => KubeApi.fromEnvironment({ kubeconfig: join(dir, 'nope') })).toThrow(`kubeconfig ${join(dir, 'nope')} does not exist`);
    expect(() => KubeApi.fromEnvironment({ kubeconfig: only, context: 'y' })).toThrow("kubeconfig: no context 'y' (have: x)");
  });

  it('inside a cluster: the service account folder, its token re-read by client-node', () => {
    process.env.HOME = dir; // no ~/.kube/config
    expect(() => KubeApi.fromEnvironment()).toThrow(/not running in a cluster \(KUBERNETES_SERVICE_HOST unset\)/);
    process.env.KUBERNETES_SERVICE_HOST = 'fd00::1';
    process.env.KUBERNETES_SERVICE_PORT = '6443';
    process.env.NPUSERVE_SERVICE_ACCOUNT_DIR = join(dir, 'sa');
    const api = KubeApi.fromEnvironment();
    expect(api.server).toBe('https://[fd00::1]:6443');
    expect(api.config.getCurrentCluster()?.caFile).toBe(join(dir, 'sa', 'ca.crt'));
    expect(api.config.getCurrentUser()?.authProvider).toEqual({ name: 'tokenFile', config: { tokenFile: join(dir, 'sa', 'token') } });
  });
});

/** A plain HTTP server that records each request's URL and headers and answers an empty list. */
async function recorder(): Promise<{ server: Server; url: string; seen: Array<{ url: string; headers: IncomingHttpHeaders }> }> {
  const seen: Array<{ url: string; headers: IncomingHttpHeaders }> = [];
  const server = createServer((req, res) => {
    seen.push({ url: req.url ?? '', headers: req.headers });
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ kind: 'NamespaceList', metadata: { resourceVersion: '7' }, items: [{ metadata: { name: 'default' } }] }));
  });
  // As a proxy: CONNECT tunnels to the target, recorded like a request.
  server.on('connect', (req, client: Socket) => {
    seen.push({ url: `CONNECT ${req.url}`, headers: req.headers });
    const [host, port] = (req.url ?? '').split(':');
    const upstream = connect(Number(port), host, () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      upstream.pipe(client).pipe(upstream);
    });
    upstream.on('error', () => client.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen };
}

describe('KubeApi requests carry what the kubeconfig says', () => {
  it("a tokenFile relative to the kubeconfig, impersonation (as:), and the cluster's proxy-url", async () => {
    const api = await recorder();
    const proxy = await recorder();
    try {
      mkdirSync(join(dir, 'k'));
      writeFileSync(join(dir, 'k', 'token'), 'sa-token-1');
      const path = kubeconfig('k', {
        clusters: [
          { name: 'direct', cluster: { server: api.url, 'insecure-skip-tls-verify': true } },
          { name: 'proxied', cluster: { server: api.url, 'insecure-skip-tls-verify': true, 'proxy-url': proxy.url } },
        ],
        users: [{ name: 'u', user: { tokenFile: 'token', as: 'jane' } }],
        contexts: [{ name: 'direct', context: { cluster: 'direct', user: 'u' } }, { name: 'proxied', context: { cluster: 'proxied', user: 'u' } }],
        'current-context': 'direct',
      });
      const list = await KubeApi.fromEnvironment({ kubeconfig: path }).list<{ metadata: { name: string } }>('/api/v1/namespaces', { labelSelector: 'a=b' });
      expect(list.items.map((n) => n.metadata.name)).toEqual(['default']);
      expect(api.seen[0].url).toBe('/api/v1/namespaces?labelSelector=a%3Db&limit=500');
      expect(api.seen[0].headers.authorization).toBe('Bearer sa-token-1');
      expect(api.seen[0].headers['impersonate-user']).toBe('jane');

      await KubeApi.fromEnvironment({ kubeconfig: path, context: 'proxied' }).get('/api/v1/namespaces');
      expect(proxy.seen.map((r) => r.url)).toEqual([`CONNECT ${api.url.slice('http://'.length)}`]);
      expect(api.seen.at(-1)?.url).toBe('/api/v1/namespaces');
    } finally {
      api.server.close();
      proxy.server.close();
    }
  });
});

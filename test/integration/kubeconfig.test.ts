// The operator reaches the API server the ways users' kubeconfigs do: KUBECONFIG naming two files
// (cluster and context in one, with a CA path relative to its folder; the user in the other, with an
// exec credential plugin given by a relative command), no --kubeconfig flag. The plugin here hands out
// the local cluster's client certificate, as EKS/GKE/AKS plugins hand out tokens, and must be asked.
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dump } from 'js-yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { imageFlags, servingNode } from '../cluster/helpers.js';
import type { KubeApi } from '../cluster/kube.js';
import { applyCrd, cluster, kubeClient, modelNamespace, npuModel, repoRoot, waitFor, waitForPhase } from './operator-harness.js';

interface LocalKubeconfig {
  clusters: Array<{ cluster: { server: string; 'certificate-authority-data': string } }>;
  users: Array<{ user: { 'client-certificate-data': string; 'client-key-data': string } }>;
}

let client: KubeApi;
let ns: string;
let dir: string;

beforeAll(async () => {
  client = kubeClient();
  await applyCrd();
  ns = await modelNamespace(client, 'kubeconfig');
  dir = mkdtempSync(join(tmpdir(), 'npuserve-kubeconfig-'));
});

afterAll(async () => {
  await client.delete(`/api/v1/namespaces/${ns}`).catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
});

/** Writes a/config (cluster, context) and b/config (the exec user, plus a decoy context and cluster). */
function splitKubeconfig(): { kubeconfig: string; invocations: string } {
  const local = JSON.parse(readFileSync(cluster().kubeconfig, 'utf8')) as LocalKubeconfig;
  const pem = (b64: string) => Buffer.from(b64, 'base64').toString('utf8');
  mkdirSync(join(dir, 'a'));
  mkdirSync(join(dir, 'b', 'bin'), { recursive: true });
  writeFileSync(join(dir, 'a', 'ca.crt'), pem(local.clusters[0].cluster['certificate-authority-data']));
  writeFileSync(join(dir, 'a', 'config'), dump({
    apiVersion: 'v1', kind: 'Config',
    clusters: [{ name: 'local', cluster: { server: local.clusters[0].cluster.server, 'certificate-authority': 'ca.crt' } }],
    contexts: [{ name: 'local', context: { cluster: 'local', user: 'plugin-user', namespace: ns } }],
    'current-context': 'local',
  }));
  const credential = {
    apiVersion: 'client.authentication.k8s.io/v1',
    kind: 'ExecCredential',
    status: {
      clientCertificateData: pem(local.users[0].user['client-certificate-data']),
      clientKeyData: pem(local.users[0].user['client-key-data']),
      expirationTimestamp: new Date(Date.now() + 3600_000).toISOString(),
    },
  };
  writeFileSync(join(dir, 'b', 'credential.json'), JSON.stringify(credential));
  const invocations = join(dir, 'b', 'invocations');
  const plugin = join(dir, 'b', 'bin', 'creds');
  writeFileSync(plugin, `#!/bin/sh\necho "$*" >> '${invocations}'\ncat '${join(dir, 'b', 'credential.json')}'\n`);
  chmodSync(plugin, 0o755);
  writeFileSync(join(dir, 'b', 'config'), dump({
    apiVersion: 'v1', kind: 'Config',
    // A cluster of the same name with a dead server: the first file's entry must win, as in kubectl.
    clusters: [{ name: 'local', cluster: { server: 'https://127.0.0.1:1' } }],
    users: [{ name: 'plugin-user', user: { exec: { apiVersion: 'client.authentication.k8s.io/v1', command: './bin/creds', args: ['get-credential'], interactiveMode: 'Never' } } }],
    contexts: [{ name: 'decoy', context: { cluster: 'local', user: 'nobody' } }],
    'current-context': 'decoy',
  }));
  return { kubeconfig: `${join(dir, 'a', 'config')}:${join(dir, 'b', 'config')}`, invocations };
}

describe('the operator from a user kubeconfig', () => {
  it('KUBECONFIG=a:b with an exec credential plugin: the model gets to Ready', async () => {
    const { kubeconfig, invocations } = splitKubeconfig();
    let logs = '';
    const env = { ...process.env, KUBECONFIG: kubeconfig };
    const op = spawn(process.execPath, [
      join(repoRoot, 'bin', 'npuserve.js'), 'operator',
      '--namespaces', ns, ...imageFlags(), '--npu-node-selector', `${servingNode().label}=true`,
      '--metrics-port', '0', '--leader-elect', 'false',
    ], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    op.stdout.on('data', (c) => (logs += c));
    op.stderr.on('data', (c) => (logs += c));
    try {
      await client.create(`/apis/npuserve.io/v1alpha1/namespaces/${ns}/npumodels`, npuModel('tiny'));
      const m = await waitForPhase(client, ns, 'tiny', 'Ready').catch((e) => {
        throw new Error(`${(e as Error).message}\noperator log:\n${logs}`);
      });
      expect(m.status?.currentRevision?.precision).toBe('FP16');
      expect(existsSync(invocations)).toBe(true);
      expect(readFileSync(invocations, 'utf8').split('\n')[0]).toBe('get-credential');
      // Delete while the operator runs, so its finalizer is removed.
      await client.delete(`/apis/npuserve.io/v1alpha1/namespaces/${ns}/npumodels/tiny`);
      await waitFor('NPUModel tiny deleted', () => client.get(`/apis/npuserve.io/v1alpha1/namespaces/${ns}/npumodels/tiny`).then(() => undefined, () => true), 60_000);
    } finally {
      op.kill('SIGTERM');
    }
  }, 300_000);
});

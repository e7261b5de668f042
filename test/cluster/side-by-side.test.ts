// Two local clusters on one machine at once (the demo's left running while a test run starts its
// own): each gets its own pod subnet and real node (network namespace, containerd, kubelet), pods of
// both answer at their pod IPs, and stopping one leaves the other serving.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { down, up, type ClusterState } from './cluster.js';
import { cluster, createNamespace, kubeClient, servingNode, waitFor } from './helpers.js';
import { KubeApi } from './kube.js';
import { parsePodSubnet } from './pod-subnet.js';
import type { Pod } from './pod-types.js';
import { nodeNetns, realNodeLabel } from './real-nodes.js';

/** A pod on the cluster's real node answering GET / with its own name. */
async function echoPod(client: KubeApi, ns: string, name: string, image: string): Promise<string> {
  await client.create(`/api/v1/namespaces/${ns}/pods`, {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name },
    spec: {
      nodeSelector: { [realNodeLabel]: 'true' },
      terminationGracePeriodSeconds: 1,
      containers: [{
        name: 'web',
        image,
        imagePullPolicy: 'Never',
        command: ['node', '-e', `require('http').createServer((q, s) => s.end('${name}')).listen(8080); process.on('SIGTERM', () => process.exit(0));`],
        ports: [{ containerPort: 8080 }],
        readinessProbe: { tcpSocket: { port: 8080 }, periodSeconds: 1 },
      }],
    },
  });
  const pod = await waitFor(`pod ${ns}/${name} ready`, async () => {
    const p = await client.get<Pod>(`/api/v1/namespaces/${ns}/pods/${name}`);
    return p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ? p : undefined;
  }, 60_000);
  return pod.status!.podIP!;
}

const answer = async (ip: string) => (await fetch(`http://${ip}:8080/`, { signal: AbortSignal.timeout(5000) })).text();

const namespaces = () => execFileSync('ip', ['netns', 'list']).toString();

describe.runIf(process.getuid?.() === 0)('a second local cluster beside this run\'s', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'npuserve-second-cluster-'));
  const stateFile = path.join(dir, 'state.json');
  let second: ClusterState;
  let firstClient: KubeApi;
  let secondClient: KubeApi;
  let firstNs: string;

  beforeAll(async () => {
    firstClient = kubeClient();
    firstNs = await createNamespace(firstClient, 'side');
    servingNode(); // throws, naming what is missing, on a cluster without a real node
    second = await up({ npuNodes: 0, cpuNodes: 0, realNodes: 1, stateFile, log: (line) => console.log(`[second cluster] ${line}`) });
    secondClient = KubeApi.fromFile(second.kubeconfig);
  }, 180_000);

  afterAll(async () => {
    await down({ quiet: true, stateFile });
    fs.rmSync(dir, { recursive: true, force: true });
    await firstClient.delete(`/api/v1/namespaces/${firstNs}`).catch(() => undefined);
  });

  it('starts with its own pod subnet, and pods of both clusters answer at their pod IPs', async () => {
    const first = cluster();
    expect(second.podSubnet).not.toBe(first.podSubnet);
    const secondNs = await createNamespace(secondClient, 'side');
    const [ipA, ipB] = await Promise.all([echoPod(firstClient, firstNs, 'in-first', first.image!), echoPod(secondClient, secondNs, 'in-second', second.image!)]);
    expect(ipA.startsWith(`10.${parsePodSubnet(first.podSubnet).octet}.`)).toBe(true);
    expect(ipB.startsWith(`10.${parsePodSubnet(second.podSubnet).octet}.`)).toBe(true);
    expect(await answer(ipA)).toBe('in-first');
    expect(await answer(ipB)).toBe('in-second');
  }, 120_000);

  it('stopping the second cluster removes its node and leaves the first serving', async () => {
    expect(namespaces()).toContain(nodeNetns(second.networkId, 0));
    await down({ quiet: true, stateFile });
    expect(namespaces()).not.toContain(nodeNetns(second.networkId, 0));
    expect(namespaces()).toContain(nodeNetns(cluster().networkId, 0));
    const pod = await firstClient.get<Pod>(`/api/v1/namespaces/${firstNs}/pods/in-first`);
    expect(await answer(pod.status!.podIP!)).toBe('in-first');
  }, 120_000);
});

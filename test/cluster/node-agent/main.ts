// The local node agent (test code): registers the local NPU nodes, runs the pods the scheduler binds
// to them as local processes in their own network namespaces (pod-runner.ts, pod-network.ts), and
// provisions PVCs as host directories. Started by `npm run cluster:up` (as root, for the network
// namespaces); stops its pods and removes the pod network on SIGTERM.
//   node --import tsx test/cluster/node-agent/main.ts --kubeconfig=F --dir=DIR --network-id=ID --pod-subnet=10.N.0.0/16 --nodes=a,b
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { informer, isNotFound, KubeApi } from '../kube.js';
import { readVersions, repoRoot } from '../paths.js';
import { startKubeletServer } from './kubelet-server.js';
import { heartbeat, registerNode } from './node.js';
import { parsePodSubnet, PodNetwork, type PodSubnet } from './pod-network.js';
import { PodRunner, type AgentContext } from './pod-runner.js';
import { ensureStorageClass, runProvisioner } from './provisioner.js';
import type { Pod } from './types.js';

function parseArgs(argv: string[]): { kubeconfig: string; dir: string; networkId: string; podSubnet: PodSubnet; nodes: string[] } {
  const get = (name: string) => {
    const arg = argv.find((a) => a.startsWith(`--${name}=`));
    if (!arg) throw new Error(`node agent: missing --${name}=...`);
    return arg.slice(name.length + 3);
  };
  return { kubeconfig: get('kubeconfig'), dir: get('dir'), networkId: get('network-id'), podSubnet: parsePodSubnet(get('pod-subnet')), nodes: get('nodes').split(',').filter(Boolean) };
}

/** Lets pods reach the API server (loopback-only) at the gateway address, like the `kubernetes` Service. */
function forwardApiServer(port: number, gateway: string): net.Server {
  const server = net.createServer((socket) => {
    const upstream = net.connect({ host: '127.0.0.1', port });
    socket.pipe(upstream).pipe(socket);
    socket.on('error', () => upstream.destroy());
    upstream.on('error', () => socket.destroy());
  });
  server.listen(port, gateway);
  return server;
}

const log = (message: string) => console.log(`${new Date().toISOString()} ${message}`);

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const version = readVersions().K8S_VERSION;
  const client = KubeApi.fromFile(args.kubeconfig);
  const pidDir = path.join(args.dir, 'node-agent', 'pids');
  fs.mkdirSync(pidDir, { recursive: true });
  const ctx: AgentContext = {
    client,
    clusterDir: args.dir,
    repoRoot,
    apiserverPort: Number(new URL(client.server).port),
    gateway: args.podSubnet.gateway,
    pidDir,
    log,
  };
  const stop = new AbortController();
  const network = new PodNetwork(args.networkId, args.podSubnet);
  network.setup();
  const apiForwarder = forwardApiServer(ctx.apiserverPort, ctx.gateway);
  const runners = new Map<string, PodRunner>();

  await ensureStorageClass(client);
  void runProvisioner(client, args.dir, stop.signal, log);
  const kubeletPort = await startKubeletServer(args.dir, ctx.gateway, log);
  for (const node of args.nodes) {
    const local = { name: node, kubernetesVersion: version, kubeletPort, address: ctx.gateway, registeredAt: new Date().toISOString().replace(/\.\d{3}Z$/, 'Z') };
    await registerNode(client, local);
    log(`registered node ${node}`);
    void heartbeat(client, local, stop.signal, log);
    void informer<Pod>(client, '/api/v1/pods', { fieldSelector: `spec.nodeName=${node}` }, (type, pod) => {
      const uid = pod.metadata.uid ?? '';
      const runner = runners.get(uid);
      if (type === 'DELETED') {
        if (!runner) return;
        runners.delete(uid);
        void runner.kill(0).then(() => network.detach(uid));
        return;
      }
      if (runner) return runner.update(pod);
      const phase = pod.status?.phase;
      if (pod.metadata.deletionTimestamp || phase === 'Succeeded' || phase === 'Failed') {
        // Not ours to run (finished, or deleted before we saw it): only finish a pending deletion.
        if (pod.metadata.deletionTimestamp) {
          client
            .delete(`/api/v1/namespaces/${pod.metadata.namespace}/pods/${pod.metadata.name}`, { gracePeriodSeconds: 0, preconditions: { uid } })
            .catch((err: Error) => isNotFound(err) || log(`delete ${pod.metadata.name}: ${err.message}`));
        }
        return;
      }
      let attachment;
      try {
        attachment = network.attach(uid);
      } catch (err) {
        log(`pod ${pod.metadata.namespace}/${pod.metadata.name}: ${(err as Error).message}`);
        return;
      }
      const started = new PodRunner(ctx, pod, node, attachment);
      runners.set(uid, started);
      log(`running pod ${pod.metadata.namespace}/${pod.metadata.name} on ${node}`);
      started.run().catch((err: Error) => log(`pod ${pod.metadata.namespace}/${pod.metadata.name}: ${err.stack ?? err.message}`));
    }, stop.signal);
  }

  const shutdown = async (signal: string) => {
    log(`${signal}: stopping ${runners.size} pod(s)`);
    stop.abort();
    await Promise.all([...runners.values()].map((r) => r.kill(5)));
    network.teardown();
    apiForwarder.close();
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
}

main().catch((err: Error) => {
  console.error(`node agent: ${err.stack ?? err.message}`);
  process.exit(1);
});

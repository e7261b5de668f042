// Starts etcd, kube-apiserver, kube-controller-manager and kube-scheduler on loopback, with ports
// chosen free at start and all data under the cluster's temp dir.
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { generatePki, writeKubeconfig, type Pki } from './certs.js';
import { KubeApi, waitFor } from './kube.js';
import { freePort, startProcess, type ManagedProcess } from './processes.js';

export interface ControlPlane {
  server: string;
  kubeconfig: string;
  ports: { etcd: number; etcdPeer: number; apiserver: number };
  processes: ManagedProcess[];
  pki: Pki;
}

export const serviceClusterIpRange = '10.96.0.0/16';

function etcdHealthy(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/health', timeout: 1000 }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve(res.statusCode === 200 && body.includes('"health":"true"')));
    });
    req.on('error', () => resolve(false));
    req.on('timeout', () => req.destroy());
  });
}

/**
 * Starts the control plane; each process is recorded in `onStarted` as soon as it runs, so a failure
 * half-way still lets the caller stop what was started.
 */
/**
 * Where the API server listens and which Service range it hands out: loopback and 10.96.0.0/16 for
 * clusters without real nodes (KWOK only); with real nodes, this machine's end of node 0's
 * link and the cluster's own range, which this machine routes to the nodes (real-nodes.ts).
 */
export interface ControlPlaneNetwork {
  bindAddress: string;
  serviceCidr: string;
  /** The `kubernetes` Service's cluster IP: the range's first address. */
  serviceIp: string;
}

export const loopbackNetwork: ControlPlaneNetwork = { bindAddress: '127.0.0.1', serviceCidr: serviceClusterIpRange, serviceIp: '10.96.0.1' };

export async function startControlPlane(
  dir: string,
  bin: string,
  podGateway: string,
  onStarted: (p: ManagedProcess) => void,
  net: ControlPlaneNetwork = loopbackNetwork,
): Promise<ControlPlane> {
  const logs = path.join(dir, 'logs');
  fs.mkdirSync(logs, { recursive: true });
  const pki = generatePki(path.join(dir, 'pki'), [podGateway, net.bindAddress, net.serviceIp]);
  const ports = { etcd: await freePort(), etcdPeer: await freePort(), apiserver: await freePort(net.bindAddress) };
  const server = `https://${net.bindAddress}:${ports.apiserver}`;
  const kubeconfig = path.join(dir, 'kubeconfig');
  writeKubeconfig(kubeconfig, server, pki);
  const processes: ManagedProcess[] = [];
  const record = (p: ManagedProcess) => {
    processes.push({ name: p.name, pid: p.pid, log: p.log });
    onStarted({ name: p.name, pid: p.pid, log: p.log });
  };

  const etcdUrl = `http://127.0.0.1:${ports.etcd}`;
  const peerUrl = `http://127.0.0.1:${ports.etcdPeer}`;
  const etcd = startProcess('etcd', path.join(bin, 'etcd'), [
    '--name=default',
    `--data-dir=${path.join(dir, 'etcd')}`,
    `--listen-client-urls=${etcdUrl}`,
    `--advertise-client-urls=${etcdUrl}`,
    `--listen-peer-urls=${peerUrl}`,
    `--initial-advertise-peer-urls=${peerUrl}`,
    `--initial-cluster=default=${peerUrl}`,
    // Test data: losing it on a host crash is fine, and fsync dominates write latency on small disks.
    '--unsafe-no-fsync',
    '--quota-backend-bytes=8589934592',
    '--log-level=warn',
  ], path.join(logs, 'etcd.log'));
  record(etcd);
  await Promise.race([etcd.exited, waitFor('etcd /health', async () => ((await etcdHealthy(ports.etcd)) ? true : undefined), 30_000)]);
  etcd.stopWatching();

  const apiserver = startProcess('kube-apiserver', path.join(bin, 'kube-apiserver'), [
    `--advertise-address=${net.bindAddress}`,
    `--bind-address=${net.bindAddress}`,
    `--secure-port=${ports.apiserver}`,
    `--etcd-servers=${etcdUrl}`,
    `--cert-dir=${path.join(dir, 'pki')}`,
    `--tls-cert-file=${pki.apiserverCert}`,
    `--tls-private-key-file=${pki.apiserverKey}`,
    `--client-ca-file=${pki.caCert}`,
    `--service-account-issuer=${server}`,
    `--service-account-key-file=${pki.serviceAccountPub}`,
    `--service-account-signing-key-file=${pki.serviceAccountKey}`,
    `--service-cluster-ip-range=${net.serviceCidr}`,
    // The API server's identity toward kubelets (`kubectl logs`, `exec`): a real node's kubelet trusts the cluster CA.
    `--kubelet-client-certificate=${pki.adminCert}`,
    `--kubelet-client-key=${pki.adminKey}`,
    '--authorization-mode=Node,RBAC',
    '--allow-privileged=true',
    '--profiling=false',
    // `kubectl logs` and `exec` reach real nodes' kubelets at their InternalIP (nodes have no resolvable hostname).
    '--kubelet-preferred-address-types=InternalIP',
    '--v=1',
  ], path.join(logs, 'kube-apiserver.log'));
  record(apiserver);
  const client = KubeApi.fromFile(kubeconfig);
  try {
    await Promise.race([
      apiserver.exited,
      waitFor('kube-apiserver /readyz', async () => ((await client.requestText('GET', '/readyz')).trim() === 'ok' ? true : undefined), 120_000),
    ]);
    apiserver.stopWatching();

    const common = [
      `--kubeconfig=${kubeconfig}`,
      '--leader-elect=false',
      '--bind-address=127.0.0.1',
      '--secure-port=0',
      '--v=1',
      // The default client rate (20 requests/s) makes lifting the not-ready taint of a thousand new
      // simulated nodes take minutes; one local API server takes far more.
      '--kube-api-qps=500',
      '--kube-api-burst=1000',
    ];
    const controllerManager = startProcess('kube-controller-manager', path.join(bin, 'kube-controller-manager'), [
      ...common,
      `--authentication-kubeconfig=${kubeconfig}`,
      `--authorization-kubeconfig=${kubeconfig}`,
      `--root-ca-file=${pki.caCert}`,
      `--service-account-private-key-file=${pki.serviceAccountKey}`,
      `--cluster-signing-cert-file=${pki.caCert}`,
      `--cluster-signing-key-file=${pki.caKey}`,
      '--use-service-account-credentials=true',
      `--service-cluster-ip-range=${net.serviceCidr}`,
      '--controllers=*',
    ], path.join(logs, 'kube-controller-manager.log'));
    record(controllerManager);
    const scheduler = startProcess('kube-scheduler', path.join(bin, 'kube-scheduler'), [
      ...common,
      `--authentication-kubeconfig=${kubeconfig}`,
      `--authorization-kubeconfig=${kubeconfig}`,
    ], path.join(logs, 'kube-scheduler.log'));
    record(scheduler);
    // Pods are refused until the service-account controller has made the namespace's `default` account.
    await Promise.race([
      controllerManager.exited,
      scheduler.exited,
      waitFor('the default ServiceAccount (made by kube-controller-manager)', () =>
        client.get('/api/v1/namespaces/default/serviceaccounts/default').then(() => true), 120_000),
    ]);
    controllerManager.stopWatching();
    scheduler.stopWatching();
  } finally {
  }
  return { server, kubeconfig, ports, processes, pki };
}

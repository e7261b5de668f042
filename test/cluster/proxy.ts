// A stand-in for kube-proxy in tests: forwards TCP connections on a local port to a Service's ready
// endpoints, read from its EndpointSlices (discovery.k8s.io/v1), round-robin per connection. Only
// endpoints of pods on local nodes (see node-agent/pod-network.ts) are used; simulated pods' are skipped.
import net from 'node:net';
import { informer, type KubeApi, type KubeObject } from './kube.js';
import { isLocalPodAddress } from './node-agent/pod-network.js';

interface ServicePort {
  name?: string;
  port: number;
  targetPort?: number | string;
  protocol?: string;
}

interface EndpointSlice extends KubeObject {
  addressType: string;
  endpoints?: Array<{ addresses: string[]; conditions?: { ready?: boolean; terminating?: boolean } }>;
  ports?: Array<{ name?: string; port?: number; protocol?: string }>;
}

export interface ServiceProxy {
  /** Local port the proxy listens on (127.0.0.1). */
  port: number;
  url: string;
  /** Ready endpoints of local pods right now, as host:port. */
  endpoints: () => string[];
  close: () => Promise<void>;
}

export interface ServiceProxyOptions {
  namespace?: string;
  service: string;
  /** The Service port, by number or name. */
  port: number | string;
  /** Local port to listen on; 0 (default) picks a free one. */
  localPort?: number;
}

export async function startServiceProxy(client: KubeApi, options: ServiceProxyOptions): Promise<ServiceProxy> {
  const namespace = options.namespace ?? 'default';
  const service = await client.get<KubeObject & { spec: { ports?: ServicePort[] } }>(`/api/v1/namespaces/${namespace}/services/${options.service}`);
  const servicePort = service.spec.ports?.find((p) => p.port === Number(options.port) || p.name === options.port);
  if (!servicePort) {
    const known = (service.spec.ports ?? []).map((p) => (p.name ? `${p.name}/${p.port}` : String(p.port))).join(', ');
    throw new Error(`service ${namespace}/${options.service} has no port ${options.port} (ports: ${known || 'none'})`);
  }
  // EndpointSlice ports carry the Service port's name ('' when unnamed) and the target port number.
  const portName = servicePort.name ?? '';
  const slices = new Map<string, EndpointSlice>();
  const stop = new AbortController();
  const synced = new Promise<void>((resolve) => {
    void informer<EndpointSlice>(
      client,
      `/apis/discovery.k8s.io/v1/namespaces/${namespace}/endpointslices`,
      { labelSelector: `kubernetes.io/service-name=${options.service}` },
      (type, slice) => {
        if (type === 'DELETED') slices.delete(slice.metadata.name ?? '');
        else slices.set(slice.metadata.name ?? '', slice);
      },
      stop.signal,
      resolve,
    );
  });

  const endpoints = (): string[] => {
    const out: string[] = [];
    for (const slice of slices.values()) {
      if (slice.addressType !== 'IPv4') continue;
      const port = slice.ports?.find((p) => (p.name ?? '') === portName)?.port;
      if (!port) continue;
      for (const ep of slice.endpoints ?? []) {
        if (ep.conditions?.ready === false) continue;
        for (const address of ep.addresses) if (isLocalPodAddress(address)) out.push(`${address}:${port}`);
      }
    }
    return out.sort();
  };

  let next = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    const targets = endpoints();
    if (targets.length === 0) {
      client.destroy();
      return;
    }
    const [host, port] = targets[next++ % targets.length].split(':');
    const upstream = net.connect({ host, port: Number(port) });
    sockets.add(upstream);
    upstream.on('close', () => sockets.delete(upstream));
    client.pipe(upstream).pipe(client);
    const destroyBoth = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', destroyBoth);
    upstream.on('error', destroyBoth);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.localPort ?? 0, '127.0.0.1', () => resolve());
  });
  await synced;
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    endpoints,
    close: () =>
      new Promise<void>((resolve) => {
        stop.abort();
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

// `npuserve operator`: from its parsed configuration, starts informers, waits for the leader lease,
// runs the reconcile workers and the autoscaler, serves /metrics and /healthz, and shuts down cleanly on SIGTERM.
import { setMaxListeners } from 'node:events';
import { createServer } from 'node:http';

import { createLogger } from '../common/log.js';
import { Autoscaler } from './autoscaler/autoscaler.js';
import type { OperatorConfig } from './config.js';
import { Controller } from './controller.js';
import { EventRecorder } from './events.js';
import { KubeApi } from './kube/client.js';
import { OperatorApi } from './kube/operator-api.js';
import { LeaderElector } from './leader.js';
import { isLeader, registry } from './metrics.js';

export async function runOperator(cfg: OperatorConfig): Promise<number> {
  const log = createLogger({ ...cfg.log, base: { component: 'operator', identity: cfg.leaderElection.identity } });
  const kube = new OperatorApi(KubeApi.fromEnvironment({ kubeconfig: cfg.kubeconfig, context: cfg.context }));
  const controller = new Controller(kube, cfg, log);
  const stop = new AbortController();
  // Every informer's watch and the leader's timers listen on this signal.
  setMaxListeners(100, stop.signal);
  let leading = false;
  let exitCode = 0;

  const server = createServer(async (req, res) => {
    if (req.url === '/metrics') {
      res.setHeader('content-type', registry.contentType);
      res.end(await registry.metrics());
    } else if (req.url === '/healthz') {
      res.end('ok');
    } else if (req.url === '/readyz') {
      res.statusCode = leading || !cfg.leaderElection.enabled ? 200 : 503;
      res.end(leading ? 'leader' : 'standby');
    } else {
      res.statusCode = 404;
      res.end();
    }
  });
  if (cfg.metricsPort > 0) server.listen(cfg.metricsPort);

  const shutdown = (signal: string) => {
    log('shutting down', { signal });
    stop.abort();
  };
  process.once('SIGTERM', () => shutdown('SIGTERM'));
  process.once('SIGINT', () => shutdown('SIGINT'));

  log('starting', { namespaces: cfg.namespaces.length ? cfg.namespaces : 'all', image: cfg.image, artifactClaim: cfg.artifactClaim });
  await controller.startInformers(stop.signal);
  const elector = cfg.leaderElection.enabled ? new LeaderElector(kube, { ...cfg.leaderElection, name: cfg.leaderElection.leaseName }, log) : null;
  if (elector) {
    await elector.run(stop.signal, () => {
      exitCode = 1;
      stop.abort();
    });
  }
  if (!stop.signal.aborted) {
    leading = true;
    isLeader.set(1);
    const autoscaler = new Autoscaler(kube, controller.world, cfg, new EventRecorder(kube, 'npuserve-autoscaler', log), log);
    await Promise.all([controller.runWorkers(stop.signal), autoscaler.run(stop.signal)]);
  }
  isLeader.set(0);
  if (elector && leading && exitCode === 0) await elector.release();
  server.close();
  log('stopped', { exitCode });
  return exitCode;
}

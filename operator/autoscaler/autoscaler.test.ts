// The autoscaling loop against a recording API client and a real HTTP /metrics endpoint: what it
// writes through the scale subresource, into status.autoscaler and as an Event.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { createLogger } from '../../common/log.js';
import { parseOperatorConfig } from '../config.js';
import { EventRecorder } from '../events.js';
import { RecordingKube } from '../../test/unit/recording-kube.js';
import type { World } from '../reconcile.js';
import type { KubeObject, NPUModel } from '../types.js';
import { Autoscaler, podStartupSeconds } from './autoscaler.js';

let tokens = 0;
let server: Server;
let port: number;

function exposition(): string {
  return [
    '# TYPE npuserve_generation_tokens_total counter',
    `npuserve_generation_tokens_total{model="tiny"} ${tokens}`,
    `npuserve_requests_total{model="tiny",finish_reason="length"} ${tokens / 100}`,
    'npuserve_requests_waiting{model="tiny"} 0',
    'npuserve_requests_running{model="tiny"} 4',
    'npuserve_time_to_first_token_seconds_bucket{model="tiny",le="0.1"} 0',
    'npuserve_time_to_first_token_seconds_bucket{model="tiny",le="+Inf"} 0',
  ].join('\n');
}

beforeAll(async () => {
  server = createServer((req, res) => res.end(req.url === '/metrics' ? exposition() : ''));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as AddressInfo).port;
});

afterAll(() => new Promise<void>((r) => server.close(() => r())));

const fakeInformer = <T extends KubeObject>(items: T[]) => ({
  get: (key: string) => items.find((o) => `${o.metadata.namespace}/${o.metadata.name}` === key),
  list: (filter?: (o: T) => boolean) => (filter ? items.filter(filter) : items),
});

const silent = createLogger({ format: 'json', level: 'error', write: () => {} });

describe('Autoscaler', () => {
  it('scales up through /scale, records the decision in status.autoscaler and a ScaledUp Event', async () => {
    const model: NPUModel = {
      apiVersion: 'npuserve.io/v1alpha1',
      kind: 'NPUModel',
      metadata: { name: 'tiny', namespace: 'ns', uid: 'u1' },
      spec: { source: { uri: 'file:///m' }, replicas: 1, service: { port }, autoscaling: { minReplicas: 1, maxReplicas: 4, targetTokensPerSecondPerReplica: 400 } },
    };
    const pod = {
      metadata: { name: 'tiny-a', namespace: 'ns', labels: { 'app.kubernetes.io/instance': 'tiny', 'app.kubernetes.io/component': 'server' } },
      status: { podIP: '127.0.0.1', conditions: [{ type: 'Ready', status: 'True' }] },
    };
    const world = { models: fakeInformer([model]), pods: fakeInformer([pod]) } as unknown as World;
    const recorder = new RecordingKube();
    const calls = recorder.calls;
    const kube = recorder.operatorApi();
    const cfg = parseOperatorConfig(['--scrape-interval-seconds', '1']);
    const autoscaler = new Autoscaler(kube, world, cfg, new EventRecorder(kube, 'test', silent), silent);

    await autoscaler.pass();
    expect(calls.map((c) => c.path)).toEqual(['/apis/npuserve.io/v1alpha1/namespaces/ns/npumodels/tiny/status']);
    expect(calls[0]!.body.status.autoscaler).toMatchObject({ desiredReplicas: 1, reason: 'no metrics yet: holding replicas', tokensPerSecond: null });

    // ~4000 tokens/s for 0.5 s: 10 x the 400 target of the one replica -> panic, up to maxReplicas at once
    tokens += 2000;
    await new Promise((r) => setTimeout(r, 500));
    calls.splice(0);
    await autoscaler.pass();
    const scale = calls.find((c) => c.path.endsWith('/scale'));
    expect(scale?.path).toBe('/apis/npuserve.io/v1alpha1/namespaces/ns/npumodels/tiny/scale');
    expect(scale?.body).toEqual({ spec: { replicas: 4 } });
    const event = calls.find((c) => c.path === '/api/v1/namespaces/ns/events')?.body;
    expect(event).toMatchObject({ reason: 'ScaledUp', type: 'Normal', involvedObject: { kind: 'NPUModel', name: 'tiny' } });
    expect(event.message).toMatch(/^1 -> 4 replicas: panic: tokens\/s \d+ > 1 x 400 target/);
    const status = calls.find((c) => c.path.endsWith('/status'))?.body.status.autoscaler;
    expect(status).toMatchObject({ desiredReplicas: 4, waitingRequests: 0 });
    expect(status.tokensPerSecond).toBeGreaterThan(1600);
    expect(status.lastScaleTime).toMatch(/^\d{4}-\d\d-\d\dT/);
    expect(status.recommendations).toEqual([{ time: status.lastScaleTime, replicas: 4 }]);
  });

  it('scales an idle model with minReplicas 0 to zero (ScaledToZero), and back to one for requests the gateway holds (ScaledFromZero)', async () => {
    const longAgo = new Date(Date.now() - 120_000).toISOString();
    const model: NPUModel = {
      apiVersion: 'npuserve.io/v1alpha1',
      kind: 'NPUModel',
      metadata: { name: 'idle', namespace: 'ns', uid: 'u2' },
      spec: { source: { uri: 'file:///m' }, replicas: 1, service: { port }, autoscaling: { minReplicas: 0, maxReplicas: 2, scaleToZeroAfterSeconds: 60 } },
      status: { autoscaler: { lastRequestTime: longAgo } },
    };
    const world = { models: fakeInformer([model]), pods: fakeInformer([]) } as unknown as World;
    const recorder = new RecordingKube();
    const kube = recorder.operatorApi();
    const autoscaler = new Autoscaler(kube, world, parseOperatorConfig(['--scrape-interval-seconds', '1']), new EventRecorder(kube, 'test', silent), silent);

    await autoscaler.pass();
    expect(recorder.calls.find((c) => c.path.endsWith('/scale'))?.body).toEqual({ spec: { replicas: 0 } });
    const toZero = recorder.calls.find((c) => c.path.endsWith('/events'))?.body;
    expect(toZero).toMatchObject({ reason: 'ScaledToZero' });
    expect(toZero.message).toMatch(/^1 -> 0 replicas: no requests for 1\d\d s \(scaleToZeroAfterSeconds 60\): scaled to zero$/);
    expect(recorder.calls.find((c) => c.path.endsWith('/status'))?.body.status.autoscaler).toMatchObject({ desiredReplicas: 0, lastRequestTime: longAgo, heldRequests: 0 });

    model.spec.replicas = 0;
    model.metadata.annotations = { 'held-requests.npuserve.io/gw-1': JSON.stringify({ requests: 2, time: new Date().toISOString() }) };
    recorder.calls.splice(0);
    await autoscaler.pass();
    expect(recorder.calls.find((c) => c.path.endsWith('/scale'))?.body).toEqual({ spec: { replicas: 1 } });
    expect(recorder.calls.find((c) => c.path.endsWith('/events'))?.body).toMatchObject({ reason: 'ScaledFromZero', message: '0 -> 1 replicas: 2 requests held by the gateway need 1 replicas' });
    expect(recorder.calls.find((c) => c.path.endsWith('/status'))?.body.status.autoscaler).toMatchObject({ desiredReplicas: 1, heldRequests: 2 });
  });
});

describe('podStartupSeconds', () => {
  it('is the median of creation to Ready over the ready serving pods, for the policy\'s trend to look ahead by', () => {
    const model = { metadata: { name: 'm', namespace: 'ns' }, spec: { source: { uri: 'file:///m' } } } as NPUModel;
    const pod = (name: string, created: string, ready: string, status = 'True') => ({
      metadata: { name, namespace: 'ns', creationTimestamp: created, labels: { 'app.kubernetes.io/instance': 'm', 'app.kubernetes.io/component': 'server' } },
      status: { podIP: '10.0.0.1', conditions: [{ type: 'Ready', status, lastTransitionTime: ready }] },
    });
    const world = (pods: object[]) => ({ models: fakeInformer([model]), pods: fakeInformer(pods as KubeObject[]) }) as unknown as World;
    const pods = [
      pod('a', '2026-12-03T10:00:00Z', '2026-12-03T10:00:42Z'),
      pod('b', '2026-12-03T10:05:00Z', '2026-12-03T10:05:30Z'),
      pod('c', '2026-12-03T10:09:00Z', '2026-12-03T10:10:00Z'),
      pod('not-ready', '2026-12-03T10:09:00Z', '2026-12-03T10:20:00Z', 'False'),
    ];
    expect(podStartupSeconds(world(pods), model)).toBe(42);
    expect(podStartupSeconds(world([]), model)).toBeUndefined();
  });
});

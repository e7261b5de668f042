// The resource builders and the pure rollout decisions: what the operator would create for a model,
// checked field by field where a user or the scheduler depends on it.
import { describe, expect, it } from 'vitest';

import { parseOperatorConfig } from '../config.js';
import { desiredRevision, revisionName, sourceVolume, type Revision } from '../revision.js';
import { conversionOutcome, planRollout, STUCK_ANNOTATION } from '../rollout.js';
import type { NPUModel } from '../types.js';
import { childName, modelNameProblem } from './common.js';
import { deployment, endpoint, service } from './deployment.js';
import { conversionJob } from './job.js';
import { networkPolicy } from './network-policy.js';
import { parseQuantity, podSizing } from './sizing.js';

const cfg = parseOperatorConfig([], {});

/** Mistral 7B v0.3 in INT8 as its conversion reports it: 32 layers, 8 KV heads of 128. */
const MISTRAL_INT8 = { fileBytes: 7_700_000_000, layers: 32, kvHeads: 8, headDim: 128 };

function model(spec: Partial<NPUModel['spec']> = {}): NPUModel {
  return {
    apiVersion: 'npuserve.io/v1alpha1',
    kind: 'NPUModel',
    metadata: { name: 'mistral-7b', namespace: 'ml', uid: 'uid-1', generation: 1 },
    spec: { source: { uri: 'pvc://model-store/mistral-7b-v0.3' }, precision: 'INT8', ...spec },
  };
}

describe('revisions', () => {
  it('hash source, precision and optimize level, and nothing else', () => {
    const a = revisionName(model());
    expect(a).toMatch(/^r[0-9a-f]{10}$/);
    expect(revisionName(model({ replicas: 5, runtime: { maxBatchSize: 4 } }))).toBe(a);
    expect(revisionName(model({ precision: 'FP16' }))).not.toBe(a);
    expect(revisionName(model({ conversion: { optimizeLevel: 1 } }))).not.toBe(a);
    expect(revisionName(model({ source: { uri: 'pvc://model-store/other' } }))).not.toBe(a);
  });

  it('mount each source scheme read-only, and name what is wrong with a bad one', () => {
    const policy = cfg.sources;
    expect(sourceVolume('pvc://store/dir/model', policy)).toEqual({ volume: { name: 'source', persistentVolumeClaim: { claimName: 'store', readOnly: true } }, input: '/source/dir/model' });
    expect(sourceVolume('file:///models/tiny', policy)).toEqual({ volume: { name: 'source', hostPath: { path: '/models', type: 'Directory' } }, mountPath: '/source/models', input: '/source/models/tiny' });
    expect(sourceVolume('https://example.org/m.gguf', policy)).toEqual({ volume: null, input: 'https://example.org/m.gguf' });
    expect(sourceVolume('pvc://store/../../etc', policy)).toMatch(/'\.\.' segments are not allowed \(the path could leave the volume\)/);
    expect(sourceVolume('s3://bucket/m', policy)).toMatch(/expected pvc:\/\/CLAIM\/PATH/);
    expect(desiredRevision(model({ source: { uri: 'https://x.org/m.npu', format: 'npu' } }), policy)).toMatch(/prebuilt .npu source must be pvc/);
    const pre = desiredRevision(model({ source: { uri: 'pvc://store/m.npu', format: 'npu' } }), policy) as Revision;
    expect(pre.prebuilt).toBe(true);
    expect(pre.artifact).toBe('/source/m.npu');
  });
});

describe('conversion Job', () => {
  const rev = desiredRevision(model(), cfg.sources) as Revision;
  const job = conversionJob(model(), rev, cfg);
  const pod = job.spec.template.spec;
  const c = pod.containers[0];

  it('runs npuserve convert with the accuracy gate into the revision artifact, once', () => {
    expect(c.args).toEqual(expect.arrayContaining(['convert', '--input', '/source/mistral-7b-v0.3', '--precision', 'INT8', '--output', `/artifacts/mistral-7b/${rev.name}.npu`, '--min-cosine', '0.99']));
    expect(job.spec.backoffLimit).toBe(0);
    expect(pod.restartPolicy).toBe('Never');
    expect(job.metadata.ownerReferences).toEqual([{ apiVersion: 'npuserve.io/v1alpha1', kind: 'NPUModel', name: 'mistral-7b', uid: 'uid-1', controller: true, blockOwnerDeletion: true }]);
  });

  it('lands on NPU nodes with an NPU request, like serving pods', () => {
    expect(pod.nodeSelector).toEqual({ accelerator: 'huawei-Ascend910' });
    expect(c.resources.limits).toEqual({ 'huawei.com/Ascend910': '1' });
    expect(c.securityContext.runAsNonRoot).toBe(true);
    expect(c.securityContext.readOnlyRootFilesystem).toBe(true);
  });
});

describe('serving Deployment and Service', () => {
  const m = model({ placement: { npusPerReplica: 2, nodeSelector: { pool: 'npu' }, tolerations: [{ key: 'npu', operator: 'Exists' }] }, runtime: { maxBatchSize: 8 } });
  const rev = desiredRevision(m, cfg.sources) as Revision;
  const d = deployment(m, rev, cfg, 3, { maxSurge: 0, maxUnavailable: 1 }, podSizing(m, MISTRAL_INT8, rev.name));
  const c = d.spec.template.spec.containers[0];

  it('serves the revision artifact with probes for a slow load and draining', () => {
    expect(c.args.slice(0, 3)).toEqual(['serve', '--model', rev.artifact]);
    expect(c.args).toEqual(expect.arrayContaining(['--max-batch-size', '8', '--port', '8000']));
    expect(c.readinessProbe.httpGet.path).toBe('/readyz');
    expect(c.livenessProbe.httpGet.path).toBe('/healthz');
    expect(c.startupProbe.periodSeconds * c.startupProbe.failureThreshold).toBeGreaterThanOrEqual(1800);
    expect(c.lifecycle.preStop).toBeDefined();
    expect(d.spec.template.spec.terminationGracePeriodSeconds).toBeGreaterThan(45);
  });

  it('places pods as the model says and rolls with the given strategy', () => {
    expect(d.spec.replicas).toBe(3);
    expect(d.spec.strategy.rollingUpdate).toEqual({ maxSurge: 0, maxUnavailable: 1 });
    expect(d.spec.template.spec.nodeSelector).toEqual({ pool: 'npu' });
    expect(d.spec.template.spec.tolerations).toEqual([{ key: 'npu', operator: 'Exists' }]);
    // 7 700 000 000 B of weights + 16384 tokens x 32 x 2 x 8 x 128 x 2 B of KV cache (2 GiB) + 1 MiB of RoPE tables + 384 MiB.
    expect(c.resources).toEqual({ requests: { 'huawei.com/Ascend910': '2', cpu: '4', memory: '9777Mi' }, limits: { 'huawei.com/Ascend910': '2', cpu: '4', memory: '9777Mi' } });
    expect(d.spec.template.metadata.labels['npuserve.io/revision']).toBe(rev.name);
    expect(d.spec.selector.matchLabels).toEqual({ 'app.kubernetes.io/instance': 'mistral-7b', 'app.kubernetes.io/component': 'server' });
  });

  it('exposes the OpenAI API on the Service; the endpoint names it', () => {
    const s = service(m);
    expect(s.spec.selector).toEqual(d.spec.selector.matchLabels);
    expect(s.spec.ports[0]).toMatchObject({ port: 8000, targetPort: 'http' });
    expect(endpoint(m)).toBe('http://mistral-7b.ml.svc:8000/v1');
  });

  it('keeps child names within 63 characters, and names that share a long prefix apart', () => {
    expect(childName('tiny', 'convert-r0123456789')).toBe('tiny-convert-r0123456789');
    expect(childName('a'.repeat(80), 'convert-r0123456789')).toHaveLength(63);
    // Two valid 50-character model names that differ only in their last character.
    const a = childName(`${'m'.repeat(49)}a`, 'convert-r0123456789');
    const b = childName(`${'m'.repeat(49)}b`, 'convert-r0123456789');
    expect(a).toHaveLength(63);
    expect(b).toHaveLength(63);
    expect(a).not.toBe(b);
    expect(a).toMatch(/^m+-[0-9a-f]{8}-convert-r0123456789$/);
  });

  it('refuses model names a Service or a label value cannot hold, naming the rule', () => {
    expect(modelNameProblem('mistral-7b')).toBeNull();
    expect(modelNameProblem('m'.repeat(63))).toBeNull();
    expect(modelNameProblem('m'.repeat(64))).toMatch(/metadata.name 'm{64}' \(64 characters\) cannot name the model's Service and labels: it must be at most 63 characters/);
    expect(modelNameProblem('llama.3')).toMatch(/lowercase letters, digits and '-', starting with a letter/);
    expect(modelNameProblem('7b')).toMatch(/starting with a letter/);
  });
});

describe('serving pod sizing', () => {
  const runtime = { maxBatchSize: 8, maxSeqLen: 2048 };
  const sized = (rt: NonNullable<NPUModel['spec']['runtime']>) => {
    const m = model({ runtime: { ...runtime, ...rt } });
    const rev = desiredRevision(m, cfg.sources) as Revision;
    const sizing = podSizing(m, MISTRAL_INT8, rev.name);
    const c = deployment(m, rev, cfg, 1, { maxSurge: 1, maxUnavailable: 0 }, sizing).spec.template.spec.containers[0];
    return { sizing, c, threadsArg: c.args.includes('--threads') ? c.args[c.args.indexOf('--threads') + 1] : undefined };
  };

  it.each([
    ['nothing said: 4 threads, cpu 4, no --threads (the engine follows its quota)', {}, 4, { cpu: '4' }, { cpu: '4' }, undefined],
    ['spec.runtime.threads', { threads: 6 }, 6, { cpu: '6' }, { cpu: '6' }, '6'],
    ['a fractional CPU limit rounds up', { resources: { limits: { cpu: '2500m' } } }, 3, { cpu: '2500m' }, { cpu: '2500m' }, undefined],
    ['a CPU request alone: the limit is its threads', { resources: { requests: { cpu: '500m' } } }, 1, { cpu: '500m' }, { cpu: '1' }, undefined],
    ['a request above the threads raises the limit to it', { threads: 2, resources: { requests: { cpu: 8 } } }, 2, { cpu: 8 }, { cpu: 8 }, '2'],
  ] as const)('%s', (_name, rt, threads, requests, limits, threadsArg) => {
    const s = sized(rt);
    expect(s.sizing.threads).toBe(threads);
    expect(s.c.resources.requests).toMatchObject(requests);
    expect(s.c.resources.limits).toMatchObject(limits);
    expect(s.threadsArg).toBe(threadsArg);
  });

  it.each([
    ['the derived figure, request = limit (f16 KV cache by default)', {}, '9777Mi', '9777Mi', '--kv-cache-dtype f16'],
    ['an f32 KV cache doubles its 2 GiB', { kvCacheDtype: 'f32' as const }, '11825Mi', '11825Mi', '--kv-cache-dtype f32'],
    ['a KV cache of twice the tokens', { maxBatchSize: 16 }, '11825Mi', '11825Mi', '--max-batch-size 16'],
    ["the user's limit above the need, request = limit", { resources: { limits: { memory: '16Gi' } } }, '16Gi', '16Gi', '--kv-cache-dtype f16'],
    ["the user's request above the need raises the limit to it", { resources: { requests: { memory: '12Gi' } } }, '12Gi', '12Gi', '--kv-cache-dtype f16'],
    ["the user's request below the need: the limit is the need", { resources: { requests: { memory: '8Gi' } } }, '8Gi', '9777Mi', '--kv-cache-dtype f16'],
  ])('memory: %s', (_name, rt, request, limit, arg) => {
    const s = sized(rt);
    expect(s.c.resources.requests.memory).toBe(request);
    expect(s.c.resources.limits.memory).toBe(limit);
    expect(s.c.args.join(' ')).toContain(arg);
    expect(s.sizing.insufficientMemory).toBeUndefined();
  });

  it('a memory limit below the need is refused, naming both figures and how the need is made', () => {
    const s = sized({ resources: { limits: { memory: '8Gi' } } });
    expect(s.sizing.insufficientMemory).toMatch(/^spec\.runtime\.resources\.limits\.memory 8Gi \(8192 MiB\) is below the 9777 MiB revision r[0-9a-f]{10} needs per pod: weights 7344 MiB \+ KV cache 2048 MiB \(16384 tokens x 32 layers x 2 \(K, V\) x 8 KV heads x 128 head dim x 2 bytes \(f16\)\) \+ RoPE tables 1 MiB \+ runtime 384 MiB = 9777 MiB;.*the operator then sets 9777Mi/);
    expect(sized({ kvCacheDtype: 'f32', resources: { limits: { memory: '8Gi' } } }).sizing.insufficientMemory).toMatch(/or use runtime\.kvCacheDtype f16$/);
    expect(sized({ resources: { limits: { memory: '9777Mi' } } }).sizing.insufficientMemory).toBeUndefined();
    expect(sized({ resources: { limits: { memory: '9776Mi' } } }).sizing.insufficientMemory).toMatch(/9776Mi \(9776 MiB\) is below the 9777 MiB/);
  });

  it("without the revision's footprint (converted by an older operator) only the user's memory figures apply", () => {
    const m = model({ runtime: { resources: { limits: { memory: '1Gi' } } } });
    expect(podSizing(m, undefined, 'r1')).toEqual({ threads: 4, threadsFromSpec: false, requests: { cpu: '4', memory: '1Gi' }, limits: { cpu: '4', memory: '1Gi' } });
    expect(podSizing(model(), undefined, 'r1').limits).toEqual({ cpu: '4' });
  });

  it.each([
    ['500m', 0.5],
    ['2', 2],
    [3, 3],
    ['1.5', 1.5],
    ['8Gi', 8 * 2 ** 30],
    ['9777Mi', 9777 * 2 ** 20],
    ['1G', 1e9],
    ['128974848', 128974848],
    ['1e3', 1000],
    ['12k', 12000],
    ['1Gb', undefined],
    ['', undefined],
  ] as const)('quantity %s is %s', (q, value) => {
    expect(parseQuantity(q)).toBe(value);
  });
});

describe('API key and NetworkPolicy', () => {
  const rev = desiredRevision(model(), cfg.sources) as Revision;
  const container = (m: NPUModel) => deployment(m, rev, cfg, 1, { maxSurge: 1, maxUnavailable: 0 }, podSizing(m, undefined, rev.name)).spec.template.spec.containers[0];

  it("gives serving pods NPUSERVE_API_KEY from the model's Secret (default key api-key), and no key without one", () => {
    expect(container(model({ service: { apiKeySecretRef: { name: 'mistral-key', key: 'token' } } })).env).toEqual([
      { name: 'NPUSERVE_API_KEY', valueFrom: { secretKeyRef: { name: 'mistral-key', key: 'token' } } },
    ]);
    expect(container(model({ service: { apiKeySecretRef: { name: 'mistral-key' } } })).env).toEqual([{ name: 'NPUSERVE_API_KEY', valueFrom: { secretKeyRef: { name: 'mistral-key', key: 'api-key' } } }]);
    expect(container(model()).env).toEqual([]);
    // The key never appears in the arguments (they show in the process list and the pod spec).
    expect(container(model({ service: { apiKeySecretRef: { name: 'mistral-key' } } })).args.join(' ')).not.toMatch(/api-key|mistral-key/);
    // Probes stay unauthenticated paths.
    expect([container(model()).readinessProbe.httpGet.path, container(model()).livenessProbe.httpGet.path]).toEqual(['/readyz', '/healthz']);
  });

  it("admits to the serving pods' API port only the model's namespace, the operator's pods and the allowed namespaces", () => {
    const c = parseOperatorConfig(['--network-policy-namespaces', 'gateway, ingress-nginx'], { POD_NAMESPACE: 'npuserve-system' });
    const np = networkPolicy(model({ service: { port: 9000 } }), c);
    expect(np.metadata).toMatchObject({ name: 'mistral-7b', namespace: 'ml', ownerReferences: [{ kind: 'NPUModel', name: 'mistral-7b', uid: 'uid-1', controller: true }] });
    expect(np.spec.podSelector.matchLabels).toEqual({ 'app.kubernetes.io/instance': 'mistral-7b', 'app.kubernetes.io/component': 'server' });
    expect(np.spec.policyTypes).toEqual(['Ingress']);
    expect(np.spec.ingress).toEqual([
      {
        ports: [{ protocol: 'TCP', port: 9000 }],
        from: [
          { podSelector: {} },
          { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'npuserve-system' } }, podSelector: { matchLabels: { 'app.kubernetes.io/name': 'npuserve-operator' } } },
          { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'npuserve-system' } }, podSelector: { matchLabels: { 'app.kubernetes.io/name': 'npuserve-gateway' } } },
          { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'gateway' } } },
          { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'ingress-nginx' } } },
        ],
      },
    ]);
    // The port it admits is the one the Deployment's container listens on.
    expect(container(model({ service: { port: 9000 } })).ports[0].containerPort).toBe(9000);
  });

  it('is on by default and refuses a --network-policy that is not true or false', () => {
    expect(cfg.networkPolicy.enabled).toBe(true);
    expect(parseOperatorConfig(['--network-policy', 'false'], {}).networkPolicy.enabled).toBe(false);
    expect(() => parseOperatorConfig(['--network-policy', 'off'], {})).toThrow(/--network-policy must be true or false, got 'off'/);
  });
});

describe('rollout decisions', () => {
  it('surges with a spare NPU, replaces one at a time without, and reports a pause for one replica', () => {
    expect(planRollout(1, 1, 1)).toEqual({ strategy: { maxSurge: 1, maxUnavailable: 0 }, pausesServing: false });
    expect(planRollout(1, 2, 3)).toEqual({ strategy: { maxSurge: 0, maxUnavailable: 1 }, pausesServing: false });
    expect(planRollout(0, 1, 1)).toEqual({ strategy: { maxSurge: 0, maxUnavailable: 1 }, pausesServing: true });
  });

  it('reads a conversion result from the Job and its pod termination message', () => {
    const pod = (exitCode: number, message: string) => ({ metadata: { name: 'p' }, status: { containerStatuses: [{ state: { terminated: { exitCode, message } } }] } });
    expect(conversionOutcome({ status: { succeeded: 1 } }, [pod(0, JSON.stringify({ accuracy: { cosineSimilarity: 0.995, top1Agreement: 0.9 } }))])).toEqual({ state: 'succeeded', accuracy: { cosineSimilarity: 0.995, top1Agreement: 0.9 }, precision: undefined });
    expect(conversionOutcome({ status: { failed: 1 } }, [pod(3, JSON.stringify({ error: 'accuracy gate failed: cosine similarity 0.95' }))])).toEqual({ state: 'failed', reason: 'AccuracyGateFailed', message: 'accuracy gate failed: cosine similarity 0.95' });
    expect(conversionOutcome({ status: { failed: 1 } }, [pod(1, 'download of https://x failed: HTTP 404')])).toMatchObject({ state: 'failed', reason: 'ConversionFailed', message: 'download of https://x failed: HTTP 404' });
    const pending = { metadata: { name: 'p' }, status: { conditions: [{ type: 'PodScheduled', status: 'False', reason: 'Unschedulable', message: '0/3 nodes are available: 3 Insufficient huawei.com/Ascend910.' }] } };
    expect(conversionOutcome({ status: { active: 1 } }, [pending])).toEqual({ state: 'running', pending: true, message: 'conversion pod pending: Unschedulable: 0/3 nodes are available: 3 Insufficient huawei.com/Ascend910.' });
  });

  it('calls a placed pod that has not started within the limit stuck, with what it waits on, and keeps a suspended Job failed', () => {
    const placed = (waiting?: object) => ({
      metadata: { name: 'tiny-convert-r1-x7k2p', creationTimestamp: '2026-01-01T00:00:00Z' },
      spec: { nodeName: 'npu-0' },
      status: { phase: 'Pending', conditions: [{ type: 'PodScheduled', status: 'True', lastTransitionTime: '2026-01-01T00:00:00Z' }], ...(waiting ? { containerStatuses: [{ state: { waiting } }] } : {}) },
    });
    const t0 = Date.parse('2026-01-01T00:00:00Z');
    const pull = { reason: 'ImagePullBackOff', message: 'Back-off pulling image "npuserve:nope"' };
    expect(conversionOutcome({ status: { active: 1 } }, [placed(pull)], t0 + 299_000, 300_000)).toEqual({ state: 'running', message: 'conversion Job running' });
    expect(conversionOutcome({ status: { active: 1 } }, [placed(pull)], t0 + 301_000, 300_000)).toEqual({ state: 'stuck', message: 'pod tiny-convert-r1-x7k2p on node npu-0 has not started in 301 s (ImagePullBackOff: Back-off pulling image "npuserve:nope")' });
    expect(conversionOutcome({ status: { active: 1 } }, [placed()], t0 + 400_000, 300_000)).toMatchObject({ state: 'stuck', message: expect.stringMatching(/has not started in 400 s \(ContainerCreating\)$/) });
    const suspended = { metadata: { annotations: { [STUCK_ANNOTATION]: 'pod p has not started in 301 s (ContainerCreating)' } }, spec: { suspend: true }, status: {} };
    expect(conversionOutcome(suspended, [], t0, 300_000)).toEqual({ state: 'failed', reason: 'ConversionStuck', message: 'pod p has not started in 301 s (ContainerCreating)' });
  });
});

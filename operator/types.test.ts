// The operator's TypeScript types against the CRD schema: a spec and a status that use every field
// the types declare must use exactly the fields the schema declares, and vice versa.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';

import type { NPUModelSpec, NPUModelStatus } from './types.js';

// Every field of the types, filled in; `satisfies Required<...>` makes the compiler insist on all.
const spec = {
  source: { uri: 'pvc://store/m', format: 'auto', authSecretRef: { name: 'hf-token', key: 'token' } },
  precision: 'INT8',
  conversion: { optimizeLevel: 2, accuracyGate: { minCosineSimilarity: 0.99 } },
  runtime: { maxBatchSize: 16, maxSeqLen: 2048, maxWaitingRequests: 256, kvCacheDtype: 'f16', threads: 4, resources: { requests: { cpu: '2', memory: '8Gi' }, limits: { cpu: 4, memory: '8Gi' } } },
  replicas: 1,
  autoscaling: { minReplicas: 1, maxReplicas: 8, targetTokensPerSecondPerReplica: 400, ttftP95TargetMs: 800, scaleDownStabilizationSeconds: 300, scaleToZeroAfterSeconds: 300 },
  placement: { npuResourceName: 'huawei.com/Ascend910', npusPerReplica: 1, nodeSelector: { a: 'b' }, tolerations: [{ key: 'k', operator: 'Equal', value: 'v', effect: 'NoSchedule', tolerationSeconds: 1 }] },
  service: { port: 8000, apiKeySecretRef: { name: 'model-api-key', key: 'api-key' } },
} satisfies Required<NPUModelSpec>;

const revision = { name: 'r1', precision: 'INT8', artifact: '/a', accuracy: { cosineSimilarity: 1, top1Agreement: 1 }, model: { fileBytes: 1, layers: 1, kvHeads: 1, headDim: 1 } };
const status = {
  observedGeneration: 1,
  phase: 'Ready',
  conditions: [{ type: 'Available', status: 'True', observedGeneration: 1, lastTransitionTime: 't', reason: 'r', message: 'm' }],
  currentRevision: revision,
  targetRevision: revision,
  revisions: [{ ...revision, convertedAt: 't' }],
  replicas: 1,
  readyReplicas: 1,
  selector: 's',
  endpoint: 'e',
  autoscaler: { desiredReplicas: 1, tokensPerSecond: 1, ttftP95Ms: 1, waitingRequests: 0, lastScaleTime: 't', lastRequestTime: 't', heldRequests: 0, reason: 'r', recommendations: [{ time: 't', replicas: 1 }] },
} satisfies Required<NPUModelStatus>;

type Schema = { type?: string; properties?: Record<string, Schema>; items?: Schema; additionalProperties?: Schema };

function schemaPaths(s: Schema, prefix: string, out: Set<string>): Set<string> {
  if (s.properties) for (const [k, v] of Object.entries(s.properties)) schemaPaths(v, `${prefix}.${k}`, out.add(`${prefix}.${k}`));
  if (s.items) schemaPaths(s.items, `${prefix}[]`, out);
  return out;
}

function valuePaths(v: unknown, prefix: string, out: Set<string>, maps: Set<string>): Set<string> {
  if (Array.isArray(v)) v.forEach((x) => valuePaths(x, `${prefix}[]`, out, maps));
  else if (v && typeof v === 'object' && !maps.has(prefix)) for (const [k, x] of Object.entries(v)) valuePaths(x, `${prefix}.${k}`, out.add(`${prefix}.${k}`), maps);
  return out;
}

describe('types match crds/npuserve.io_npumodels.yaml', () => {
  const crd = parse(readFileSync(join(import.meta.dirname, '..', 'crds', 'npuserve.io_npumodels.yaml'), 'utf8'));
  const root: Schema = crd.spec.versions[0].schema.openAPIV3Schema;
  const maps = new Set(['spec.placement.nodeSelector']);

  it.each([
    ['spec', spec],
    ['status', status],
  ] as const)('%s fields', (name, value) => {
    const fromSchema = [...schemaPaths(root.properties![name], name, new Set())].sort();
    const fromTypes = [...valuePaths(value, name, new Set(), maps)].sort();
    expect(fromTypes).toEqual(fromSchema);
  });

  it('has the printer columns, short name and subresources kubectl users rely on', () => {
    const v = crd.spec.versions[0];
    expect(crd.spec.names.shortNames).toContain('npum');
    expect(v.additionalPrinterColumns.map((c: { name: string }) => c.name.toUpperCase())).toEqual(['PRECISION', 'PHASE', 'READY', 'REPLICAS', 'ENDPOINT', 'AGE']);
    expect(v.subresources.scale).toEqual({ specReplicasPath: '.spec.replicas', statusReplicasPath: '.status.replicas', labelSelectorPath: '.status.selector' });
    expect(v.subresources.status).toEqual({});
  });
});

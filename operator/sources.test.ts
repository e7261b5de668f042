// NPUModel sources against the admin's policy, as a tenant who may create NPUModels would try them:
// node paths outside the allowed prefixes or with `..`, internal URLs (metadata service, API server,
// loopback), and what a refused source becomes (a Failed condition and a Warning event, never a pod);
// and what an allowed http(s) source hands the conversion Job (allowed hosts, size cap, auth Secret).
import { describe, expect, it } from 'vitest';

import { createLogger } from '../common/log.js';
import { parseOperatorConfig } from './config.js';
import type { EventRecorder } from './events.js';
import { RecordingKube } from '../test/unit/recording-kube.js';
import { Reconciler, type World } from './reconcile.js';
import { conversionJob } from './resources/job.js';
import { desiredRevision, sourceVolume, type Revision } from './revision.js';
import type { NPUModel } from './types.js';

const cfg = parseOperatorConfig([], {});

function model(source: NPUModel['spec']['source']): NPUModel {
  return { apiVersion: 'npuserve.io/v1alpha1', kind: 'NPUModel', metadata: { name: 'm', namespace: 'tenant', uid: 'u', generation: 2 }, spec: { source } };
}

describe('file:// sources', () => {
  it.each([
    ['file:///proc/1/root', /node path \/proc\/1\/root is not under a prefix the cluster admin allows \(\/models\)/],
    ['file:///var/run/docker.sock', /node path \/var\/run\/docker\.sock is not under a prefix/],
    ['file:///../../etc/shadow', /'\.\.' segments are not allowed/],
    ['file:///models/../etc/shadow', /'\.\.' segments are not allowed/],
    ['file:///models/a/../../etc', /'\.\.' segments are not allowed/],
    ['file:///models-evil/x', /node path \/models-evil\/x is not under a prefix/],
    ['file:///models/%2e%2e/etc', /percent escapes, backslashes and control characters are not allowed/],
    ['file:///models/a\\..\\..\\etc', /percent escapes, backslashes/],
    ['file:///models/a\nb', /control characters/],
    ['file:///', /node path \/ is not under a prefix/],
  ])('refuses %j', (uri, message) => {
    expect(sourceVolume(uri, cfg.sources)).toMatch(message);
  });

  it('mounts the allowed prefix holding the path read-only, so a single file mounts and a missing path stays missing', () => {
    const rev = desiredRevision(model({ uri: 'file:///models//smollm2/./' }), cfg.sources) as Revision;
    expect(rev.source).toEqual({ volume: { name: 'source', hostPath: { path: '/models', type: 'Directory' } }, mountPath: '/source/models', input: '/source/models/smollm2' });
    const job = conversionJob(model({ uri: 'file:///models/smollm2' }), rev, cfg);
    expect(job.spec.template.spec.containers[0].volumeMounts).toContainEqual({ name: 'source', mountPath: '/source/models', readOnly: true });
    expect(sourceVolume('file:///models/gguf/smollm2.Q8_0.gguf', cfg.sources)).toEqual({ volume: { name: 'source', hostPath: { path: '/models', type: 'Directory' } }, mountPath: '/source/models', input: '/source/models/gguf/smollm2.Q8_0.gguf' });
    expect(sourceVolume('file:///models', cfg.sources)).toMatchObject({ volume: { hostPath: { path: '/models' } }, input: '/source/models' });
    const root = parseOperatorConfig(['--source-host-paths', '/'], {}).sources;
    expect(sourceVolume('file:///data/m.gguf', root)).toMatchObject({ volume: { hostPath: { path: '/data', type: 'Directory' } }, input: '/source/data/m.gguf' });
  });

  it('takes its prefixes from the admin: several, or none (file:// off)', () => {
    const two = parseOperatorConfig(['--source-host-paths', '/data/llm/,/mnt/models'], {}).sources;
    expect(two.hostPathPrefixes).toEqual(['/data/llm', '/mnt/models']);
    expect(sourceVolume('file:///mnt/models/x', two)).toMatchObject({ volume: { hostPath: { path: '/mnt/models' } }, input: '/source/mnt/models/x' });
    expect(sourceVolume('file:///models/x', two)).toMatch(/not under a prefix the cluster admin allows \(\/data\/llm, \/mnt\/models\)/);
    const none = parseOperatorConfig([], { NPUSERVE_SOURCE_HOST_PATHS: '' }).sources;
    expect(sourceVolume('file:///models/x', none)).toMatch(/file:\/\/ sources are disabled on this cluster/);
    expect(() => parseOperatorConfig(['--source-host-paths', '/models/../etc'], {})).toThrow(/must be an absolute path without '\.\.'/);
    expect(() => parseOperatorConfig(['--source-host-paths', 'models'], {})).toThrow(/must be an absolute path/);
  });
});

describe('http(s) sources', () => {
  it.each([
    ['http://169.254.169.254/latest/meta-data/', /169\.254\.169\.254 is a link-local address/],
    ['https://127.0.0.1:6443/api', /127\.0\.0\.1 is a loopback address/],
    ['http://2130706433/m.gguf', /127\.0\.0\.1 is a loopback address/],
    ['http://0x7f.1/m.gguf', /127\.0\.0\.1 is a loopback address/],
    ['http://[::1]/m.gguf', /::1 is a loopback address/],
    ['http://[::ffff:169.254.169.254]/m.gguf', /is a link-local address/],
    ['http://10.96.0.1/m.gguf', /10\.96\.0\.1 is a private address/],
    ['http://[fd00::1]/m.gguf', /fd00::1 is a private address/],
    ['http://0.0.0.0:8000/m.gguf', /0\.0\.0\.0 is an unspecified/],
    ['http://localhost:8000/m.gguf', /localhost is a machine- or cluster-internal name/],
    ['http://LOCALHOST./m.gguf', /localhost is a machine- or cluster-internal name/],
    ['http://kubernetes.default.svc/api', /kubernetes\.default\.svc is a machine- or cluster-internal name/],
    ['http://minio.storage.svc.cluster.local/m.gguf', /is a machine- or cluster-internal name/],
    ['http://metadata.google.internal/m.gguf', /is a machine- or cluster-internal name/],
    ['http://minio:9000/m.gguf', /minio is a single-label \(cluster-internal\) name/],
    ['https://user:token@huggingface.co/m.gguf', /credentials in the URL are not allowed/],
  ])('refuses %j at reconcile', (uri, message) => {
    const refused = sourceVolume(uri, cfg.sources);
    expect(refused).toMatch(message);
    if (!/credentials/.test(String(refused))) expect(refused).toMatch(/unless the cluster admin allows this one \(chart value sources\.allowedHosts\)/);
  });

  it('accepts public hosts, and internal ones the admin allows', () => {
    expect(sourceVolume('https://huggingface.co/org/repo/resolve/main/m.gguf', cfg.sources)).toEqual({ volume: null, input: 'https://huggingface.co/org/repo/resolve/main/m.gguf' });
    const allowing = parseOperatorConfig(['--source-allowed-hosts', 'minio.storage.svc,10.0.0.5'], {}).sources;
    expect(sourceVolume('http://minio.storage.svc:9000/m.gguf', allowing)).toMatchObject({ volume: null });
    expect(sourceVolume('http://10.0.0.5/m.gguf', allowing)).toMatchObject({ volume: null });
    expect(sourceVolume('http://10.0.0.6/m.gguf', allowing)).toMatch(/private address/);
  });

  it('hands the conversion Job the allowed hosts, the size cap and the auth Secret as env', () => {
    const admin = parseOperatorConfig(['--source-allowed-hosts', 'minio.storage.svc', '--source-max-download-size', '20Gi'], {});
    const m = model({ uri: 'https://huggingface.co/org/repo/resolve/main/m.gguf', authSecretRef: { name: 'hf-token', key: 'token' } });
    const c = conversionJob(m, desiredRevision(m, admin.sources) as Revision, admin).spec.template.spec.containers[0];
    expect(c.args).toEqual(expect.arrayContaining(['--input', 'https://huggingface.co/org/repo/resolve/main/m.gguf', '--allow-host', 'minio.storage.svc', '--max-download-size', '20Gi']));
    expect(c.env).toEqual([{ name: 'NPUSERVE_SOURCE_AUTHORIZATION', valueFrom: { secretKeyRef: { name: 'hf-token', key: 'token' } } }]);
    expect(() => parseOperatorConfig(['--source-max-download-size', 'lots'], {})).toThrow(/--source-max-download-size must be a size/);
    // A volume source downloads nothing: no download flags, no Secret in its pod.
    const local = model({ uri: 'pvc://store/m', authSecretRef: { name: 'hf-token', key: 'token' } });
    const lc = conversionJob(local, desiredRevision(local, admin.sources) as Revision, admin).spec.template.spec.containers[0];
    expect(lc.args).not.toContain('--allow-host');
    expect(lc).not.toHaveProperty('env');
  });
});

describe('a refused source at reconcile', () => {
  it('sets Converted=False (InvalidSource), phase Failed and a Warning event, and creates nothing', async () => {
    const m = model({ uri: 'file:///var/run/docker.sock' });
    const api = new RecordingKube();
    const events: string[] = [];
    const kube = api.operatorApi();
    const world = { models: { get: () => m } } as unknown as World;
    const recorder = { record: async (_m: NPUModel, type: string, reason: string, message: string) => events.push(`${type} ${reason}: ${message}`) } as unknown as EventRecorder;
    await new Reconciler(kube, world, cfg, recorder, createLogger({ format: 'json', level: 'error', write: () => {} })).reconcile('tenant/m');
    expect(api.lines()).toEqual(['update /apis/npuserve.io/v1alpha1/namespaces/tenant/npumodels/m/status']);
    const statuses = api.bodies('update', '/status') as NPUModel[];
    const message = 'source.uri file:///var/run/docker.sock: node path /var/run/docker.sock is not under a prefix the cluster admin allows (/models)';
    expect(events).toEqual([`Warning InvalidSource: ${message}`]);
    expect(statuses[0].status).toMatchObject({ phase: 'Failed', observedGeneration: 2, conditions: [{ type: 'Converted', status: 'False', reason: 'InvalidSource', message }] });
  });
});

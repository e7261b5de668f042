// The Helm chart with the real helm and the local cluster: lint and template pass, the schema rejects
// a wrongly typed value, the RBAC grants exactly the verbs the operator's facades declare, and the
// operator installed by the chart runs as a pod under the chart's ServiceAccount and serves a model.
import { execFile, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml, parseAllDocuments, stringify as stringifyYaml } from 'yaml';

import { gatewayGrants } from '../../gateway/kube.js';
import { operatorGrants } from '../../operator/kube/operator-api.js';
import type { Scope } from '../../operator/kube/resources.js';
import { renderCrdReference } from '../../scripts/crd-docs.js';
import { serviceAccess, servingNode } from '../cluster/helpers.js';
import { alertRules } from '../unit/prometheus-process.js';
import type { KubeApi } from '../cluster/kube.js';
import { applyCrd, cluster, deleteModelNamespace, crdPath, kubeClient, kubectl, modelNamespace, npuModel, repoRoot, waitFor, waitForPhase } from './operator-harness.js';

const chartDir = join(repoRoot, 'charts', 'npuserve');

interface HelmResult {
  code: number;
  stdout: string;
  stderr: string;
}

async function helm(...args: string[]): Promise<HelmResult> {
  try {
    const { stdout, stderr } = await promisify(execFile)(join(cluster().binDir, 'helm'), args, { maxBuffer: 64 * 1024 * 1024, timeout: 240_000 });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof err.code === 'number' ? err.code : 1, stdout: err.stdout ?? '', stderr: err.stderr ?? String(e) };
  }
}

interface Rule {
  apiGroups: string[];
  resources: string[];
  verbs: string[];
}
interface Rendered {
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  rules?: Rule[];
  spec?: any;
}

/** `helm template` with `--set` values (typed as helm parses them). */
async function render(...set: string[]): Promise<Rendered[]> {
  const out = await helm('template', 'npuserve', chartDir, '--namespace', 'npuserve-system', ...set.flatMap((s) => ['--set', s]));
  expect(out.stderr).toBe('');
  return parseAllDocuments(out.stdout).map((d) => d.toJS() as Rendered).filter(Boolean);
}

/** "group/resource verb" for every (group, resource, verb) a set of RBAC rules grants. */
function grants(rules: Rule[]): Set<string> {
  const out = new Set<string>();
  for (const r of rules) for (const g of r.apiGroups) for (const res of r.resources) for (const v of r.verbs) out.add(`${g}/${res} ${v}`);
  return out;
}

/** The rendered objects of one component (`npuserve-operator`, `npuserve-gateway`). */
const of = (docs: Rendered[], component: string) => docs.filter((d) => d.metadata.labels?.['app.kubernetes.io/name'] === component);

/** "group/resource verb" for every verb the operator's facades declare (of one scope, or all). */
function declared(scope?: Scope): Set<string> {
  return new Set(operatorGrants().filter((g) => !scope || g.scope === scope).flatMap((g) => g.verbs.map((v) => `${g.group}/${g.resource} ${v}`)));
}

describe('chart files', () => {
  it("the chart's CRD is byte-identical to crds/", () => {
    expect(readFileSync(join(chartDir, 'crds', 'npuserve.io_npumodels.yaml'), 'utf8')).toBe(readFileSync(crdPath, 'utf8'));
  });

  it('docs/crd-reference.md is generated from the current CRD (npm run docs:crd)', () => {
    expect(readFileSync(join(repoRoot, 'docs', 'crd-reference.md'), 'utf8')).toBe(renderCrdReference(readFileSync(crdPath, 'utf8')));
  });

  it('helm lint passes', async () => {
    const out = await helm('lint', chartDir, '--strict');
    expect(out.stdout).toMatch(/1 chart\(s\) linted, 0 chart\(s\) failed/);
    expect(out.code).toBe(0);
  });

  it('helm template renders the operator with its configuration as flags', async () => {
    const docs = await render('operator.npuResourceName=example.com/npu', 'operator.scrapeIntervalSeconds=7', 'operator.runtimeImage=registry.example/npuserve:1.2.3');
    const dep = docs.find((d) => d.kind === 'Deployment')!;
    const c = dep.spec.template.spec.containers[0];
    expect(c.args).toEqual(expect.arrayContaining(['operator', '--npu-resource-name=example.com/npu', '--scrape-interval-seconds=7', '--image=registry.example/npuserve:1.2.3', '--leader-elect=true', '--leader-election-namespace=npuserve-system', '--artifact-claim=npuserve-artifacts', '--npu-node-selector=accelerator=huawei-Ascend910', '--network-policy=true', '--source-host-paths=/models', '--source-max-download-size=64Gi']));
    expect(dep.spec.template.spec.serviceAccountName).toBe('npuserve');
    expect(dep.spec.template.spec.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 10001 });
    expect(of(docs, 'npuserve-operator').map((d) => d.kind).sort()).toEqual(['ClusterRole', 'ClusterRoleBinding', 'ConfigMap', 'Deployment', 'NetworkPolicy', 'Role', 'RoleBinding', 'Service', 'ServiceAccount']);
    expect(of(docs, 'npuserve-gateway').map((d) => d.kind).sort()).toEqual(['ClusterRole', 'ClusterRoleBinding', 'Deployment', 'Service', 'ServiceAccount']);
  });

  it('helm template renders the gateway with its configuration as flags, serving the namespaces the operator watches', async () => {
    const docs = await render('operator.watchNamespaces={team-a}', 'gateway.loadFactor=2', 'gateway.holdTimeoutSeconds=60');
    const dep = of(docs, 'npuserve-gateway').find((d) => d.kind === 'Deployment')!;
    const c = dep.spec.template.spec.containers[0];
    expect(c.args).toEqual(['gateway', '--port=8000', '--namespaces=team-a', '--load-factor=2', '--prefix-chars=100', '--hold-timeout-seconds=60', '--retry-after-seconds=30', '--scrape-interval-seconds=2', '--max-body-bytes=8388608', '--log-format=json', '--log-level=info']);
    expect(dep.spec.template.spec.serviceAccountName).toBe('npuserve-gateway');
    expect(dep.spec.template.metadata.labels).toEqual({ 'app.kubernetes.io/name': 'npuserve-gateway', 'app.kubernetes.io/instance': 'npuserve' });
    expect(of(docs, 'npuserve-gateway').find((d) => d.kind === 'Service')!.spec.ports).toEqual([{ name: 'http', port: 80, targetPort: 'http' }]);
    expect((await render('gateway.enabled=false')).filter((d) => d.metadata.name.includes('gateway'))).toEqual([]);
  });

  it('gateway.loadFactor: a decimal from --set (a string to helm) is the number; below 1 or not a number, helm names the value', async () => {
    const args = async (...set: string[]) => of(await render(...set), 'npuserve-gateway').find((d) => d.kind === 'Deployment')!.spec.template.spec.containers[0].args as string[];
    expect(await args('gateway.loadFactor=1.5')).toContain('--load-factor=1.5');
    expect(await args()).toContain('--load-factor=1.25');
    const refused = async (...flags: string[]) => {
      const out = await helm('template', 'npuserve', chartDir, ...flags);
      expect(out.code).not.toBe(0);
      return out.stderr;
    };
    expect(await refused('--set', 'gateway.loadFactor=0.5')).toContain('gateway.loadFactor must be at least 1, got 0.5');
    expect(await refused('--set-json', 'gateway.loadFactor=0.5')).toMatch(/at '\/gateway\/loadFactor'/);
    expect(await refused('--set', 'gateway.loadFactor=fast')).toMatch(/at '\/gateway\/loadFactor': 'fast' does not match pattern/);
  });

  it('optional objects: the artifact PVC and the ServiceMonitor', async () => {
    const docs = await render('artifactStore.create=true', 'artifactStore.size=50Gi', 'serviceMonitor.enabled=true');
    const pvc = docs.find((d) => d.kind === 'PersistentVolumeClaim')!;
    expect(pvc.metadata).toMatchObject({ name: 'npuserve-artifacts', namespace: 'npuserve-system' });
    expect(pvc.spec.resources.requests.storage).toBe('50Gi');
    const monitors = docs.filter((d) => d.kind === 'ServiceMonitor');
    expect(monitors.find((d) => d.metadata.name === 'npuserve')?.spec.endpoints[0]).toMatchObject({ port: 'metrics', path: '/metrics' });
    // The gateway's, on its Service's port, selecting the gateway's Service only.
    const gateway = monitors.find((d) => d.metadata.name === 'npuserve-gateway')!;
    expect(gateway.spec.endpoints[0]).toMatchObject({ port: 'http', path: '/metrics' });
    expect(gateway.spec.selector.matchLabels).toEqual({ 'app.kubernetes.io/name': 'npuserve-gateway', 'app.kubernetes.io/instance': 'npuserve' });
    expect((await render('serviceMonitor.enabled=true', 'gateway.enabled=false')).filter((d) => d.kind === 'ServiceMonitor').map((d) => d.metadata.name)).toEqual(['npuserve']);
  });

  it('observability: the Grafana dashboard ConfigMap by default; the PodMonitor and the PrometheusRule when enabled, whose rules promtool checks', async () => {
    const defaults = await render();
    const dashboard = defaults.find((d) => d.kind === 'ConfigMap' && d.metadata.name === 'npuserve-dashboard') as Rendered & { metadata: { labels: Record<string, string> }; data: Record<string, string> };
    expect(dashboard.metadata.labels.grafana_dashboard).toBe('1');
    expect(JSON.parse(dashboard.data['npuserve.json'])).toEqual(JSON.parse(readFileSync(join(chartDir, 'files', 'grafana-dashboard.json'), 'utf8')));
    expect(defaults.filter((d) => d.kind === 'PodMonitor' || d.kind === 'PrometheusRule')).toEqual([]);
    expect((await render('grafanaDashboard.enabled=false')).filter((d) => d.kind === 'ConfigMap')).toEqual([]);

    const docs = await render('podMonitor.enabled=true', 'prometheusRule.enabled=true', 'prometheusRule.labels.release=kube-prometheus-stack', 'operator.watchNamespaces={ml}');
    const podMonitor = docs.find((d) => d.kind === 'PodMonitor')!;
    expect(podMonitor.spec.selector.matchLabels).toEqual({ 'app.kubernetes.io/name': 'npuserve', 'app.kubernetes.io/component': 'server' });
    expect(podMonitor.spec.namespaceSelector).toEqual({ matchNames: ['ml'] });
    expect(podMonitor.spec.podMetricsEndpoints[0].relabelings).toEqual([{ sourceLabels: ['__meta_kubernetes_pod_label_npuserve_io_revision'], targetLabel: 'revision' }]);
    const rule = docs.find((d) => d.kind === 'PrometheusRule') as Rendered & { metadata: { labels: Record<string, string> } };
    expect(rule.metadata.labels.release).toBe('kube-prometheus-stack');
    const rendered = join(mkdtempSync(join(tmpdir(), 'npuserve-rules-')), 'rules.yaml');
    writeFileSync(rendered, stringifyYaml({ groups: rule.spec.groups }));
    const check = spawnSync('promtool', ['check', 'rules', rendered], { encoding: 'utf8' });
    expect(`${check.stdout}${check.stderr}`).toContain(`SUCCESS: ${alertRules().length} rules found`);
    expect(rule.spec.groups.flatMap((g: { rules: unknown[] }) => g.rules)).toEqual(alertRules());
  });

  it('a wrongly typed value fails helm install with the schema message', async () => {
    const values = join(tmpdir(), `npuserve-bad-values-${process.pid}.yaml`);
    writeFileSync(values, 'replicaCount: two\noperator:\n  scrapeIntervalSeconds: "5"\n');
    const out = await helm('install', 'bad', chartDir, '--kubeconfig', cluster().kubeconfig, '--namespace', 'default', '-f', values);
    expect(out.code).not.toBe(0);
    expect(out.stderr).toMatch(/values don't meet the specifications of the schema/);
    expect(out.stderr).toMatch(/at '\/replicaCount': got string, want integer/);
    expect(out.stderr).toMatch(/at '\/operator\/scrapeIntervalSeconds': got string, want integer/);
  });
});

describe('RBAC is exactly what the operator can call', () => {
  const used = declared();

  it("the table of the operator's facades (operator/kube/operator-api.ts)", () => {
    expect([...used].sort()).toEqual([
      '/events create', '/events patch',
      '/nodes list',
      '/pods list', '/pods watch',
      '/services create', '/services get', '/services list', '/services patch', '/services watch',
      'apps/deployments create', 'apps/deployments get', 'apps/deployments list', 'apps/deployments update', 'apps/deployments watch',
      'batch/jobs create', 'batch/jobs get', 'batch/jobs list', 'batch/jobs patch', 'batch/jobs watch',
      'coordination.k8s.io/leases create', 'coordination.k8s.io/leases get', 'coordination.k8s.io/leases update',
      'networking.k8s.io/networkpolicies create', 'networking.k8s.io/networkpolicies get', 'networking.k8s.io/networkpolicies list', 'networking.k8s.io/networkpolicies patch', 'networking.k8s.io/networkpolicies watch',
      'npuserve.io/npumodels list', 'npuserve.io/npumodels patch', 'npuserve.io/npumodels watch',
      'npuserve.io/npumodels/scale patch',
      'npuserve.io/npumodels/status patch', 'npuserve.io/npumodels/status update',
    ]);
  });

  it('watching all namespaces: ClusterRole plus the lease Role grant exactly those calls', async () => {
    const docs = of(await render(), 'npuserve-operator');
    const rules = docs.filter((d) => d.kind === 'ClusterRole' || d.kind === 'Role').flatMap((d) => d.rules ?? []);
    expect([...grants(rules)].sort()).toEqual([...used].sort());
    const role = docs.find((d) => d.kind === 'Role')!;
    expect([...grants(role.rules!)].sort()).toEqual([...declared('leader')].sort());
  });

  it('watching listed namespaces: namespaced rules are Roles there, only node and pod lists stay cluster-wide', async () => {
    const docs = of(await render('operator.watchNamespaces={team-a,team-b}'), 'npuserve-operator');
    const clusterRole = docs.find((d) => d.kind === 'ClusterRole')!;
    expect([...grants(clusterRole.rules!)].sort()).toEqual([...declared('cluster')].sort());
    const roles = docs.filter((d) => d.kind === 'Role');
    expect(roles.map((r) => r.metadata.namespace).sort()).toEqual(['npuserve-system', 'team-a', 'team-b']);
    expect([...new Set([...grants(roles.flatMap((r) => r.rules!)), ...grants(clusterRole.rules!)])].sort()).toEqual([...used].sort());
    expect(docs.find((d) => d.kind === 'Deployment')!.spec.template.spec.containers[0].args).toContain('--namespaces=team-a,team-b');
  });
});

describe('RBAC is exactly what the gateway can call', () => {
  const used = new Set(gatewayGrants().flatMap((g) => g.verbs.map((v) => `${g.group}/${g.resource} ${v}`)));

  it("the table of the gateway's facades (gateway/kube.ts)", () => {
    expect([...used].sort()).toEqual(['discovery.k8s.io/endpointslices list', 'discovery.k8s.io/endpointslices watch', 'npuserve.io/npumodels list', 'npuserve.io/npumodels patch', 'npuserve.io/npumodels watch']);
  });

  it('all namespaces: one ClusterRole; listed namespaces: a Role in each, nothing cluster-wide', async () => {
    const all = of(await render(), 'npuserve-gateway');
    expect([...grants(all.filter((d) => d.kind === 'ClusterRole').flatMap((d) => d.rules!))].sort()).toEqual([...used].sort());
    expect(all.filter((d) => d.kind === 'Role')).toEqual([]);
    const listed = of(await render('operator.watchNamespaces={team-a,team-b}'), 'npuserve-gateway');
    expect(listed.filter((d) => d.kind === 'ClusterRole')).toEqual([]);
    const roles = listed.filter((d) => d.kind === 'Role');
    expect(roles.map((r) => r.metadata.namespace).sort()).toEqual(['team-a', 'team-b']);
    for (const r of roles) expect([...grants(r.rules!)].sort()).toEqual([...used].sort());
  });
});

describe('examples/', () => {
  it.each(readdirSync(join(repoRoot, 'examples')).filter((f) => f.endsWith('.yaml')))('%s passes the API server validation of the CRD', async (file) => {
    await applyCrd();
    const obj = parseYaml(readFileSync(join(repoRoot, 'examples', file), 'utf8'));
    delete obj.metadata.namespace;
    const tmp = join(tmpdir(), `npuserve-example-${process.pid}-${file}`);
    writeFileSync(tmp, JSON.stringify(obj));
    expect(await kubectl('apply', '--dry-run=server', '-n', 'default', '-f', tmp)).toMatch(/npumodel\.npuserve\.io\/\S+ created \(server dry run\)/);
  });
});

describe('helm install on the local cluster', () => {
  let client: KubeApi;
  let ns: string;
  const release = `npuserve-${Math.random().toString(36).slice(2, 7)}`;

  beforeAll(async () => {
    client = kubeClient();
    ns = await modelNamespace(client, 'chart');
  });

  afterAll(async () => {
    await kubectl('delete', 'npum', '--all', '-n', ns, '--wait=true', '--timeout=60s').catch(() => undefined);
    await helm('uninstall', release, '--kubeconfig', cluster().kubeconfig, '--namespace', ns, '--wait', '--timeout', '60s');
    await deleteModelNamespace(client, ns, 0); // models the chart's operator could not finalize lose their finalizer
  });

  it('the operator runs as a pod under the chart ServiceAccount and brings a model to Ready', async () => {
    // Watching only this namespace keeps the chart's operator away from other tests' models.
    const out = await helm('install', release, chartDir, '--kubeconfig', cluster().kubeconfig, '--namespace', ns,
      '--set', `operator.watchNamespaces={${ns}}`,
      '--set-string', `operator.npuNodeSelector.${servingNode().label.replace(/\./g, '\\.')}=true`,
      // On a real node, the image built from this checkout and imported into its containerd.
      '--set', `image.repository=${cluster().image!.replace(/:[^:/]+$/, '')}`, '--set', `image.tag=${cluster().image!.replace(/^.*:/, '')}`, '--set', 'image.pullPolicy=Never',
      '--set', 'operator.leaderElection.leaseDurationSeconds=6',
      '--wait', '--timeout', '120s');
    expect(out.stderr).not.toMatch(/Error/);
    expect(out.code).toBe(0);

    const pods = JSON.parse(await kubectl('get', 'pods', '-n', ns, '-l', 'app.kubernetes.io/name=npuserve-operator', '-o', 'json')).items;
    expect(pods).toHaveLength(1);
    expect(pods[0].spec.serviceAccountName).toBe(release);
    expect(pods[0].spec.nodeName).toBe(servingNode().name);

    writeFileSync(join(tmpdir(), `${ns}-model.json`), JSON.stringify(npuModel('tiny')));
    await kubectl('apply', '-n', ns, '-f', join(tmpdir(), `${ns}-model.json`));
    // Conversion and serving pods each request CPU of the real node; when another model holds it
    // (a running `npm run demo`), the failure shows the Unschedulable condition.
    const model = await waitForPhase(client, ns, 'tiny', 'Ready', 240_000).catch(async (e) => {
      const m = await client.get<{ status?: { conditions?: unknown } }>(`/apis/npuserve.io/v1alpha1/namespaces/${ns}/npumodels/tiny`);
      throw new Error(`${(e as Error).message}; conditions ${JSON.stringify(m.status?.conditions)}`);
    });
    expect(model.status?.readyReplicas).toBe(1);

    const logs = await kubectl('logs', '-n', ns, pods[0].metadata.name);
    expect(logs).toMatch(/became leader/);
    expect(logs).not.toMatch(/ 403 |forbidden/i);

    const proxy = await serviceAccess(client, { namespace: ns, service: 'tiny', port: 8000 });
    try {
      const res = await waitFor('a chat completion through the Service', async () => {
        const r = await fetch(`${proxy.url}/v1/chat/completions`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ model: 'tiny', messages: [{ role: 'user', content: 'Hello' }], max_tokens: 4, temperature: 0 }),
          signal: AbortSignal.timeout(20_000),
        }).catch(() => undefined);
        return r?.status === 200 ? r.json() : undefined;
      }, 60_000, 1000);
      expect(res.choices[0].message.role).toBe('assistant');
      expect(res.usage.completion_tokens).toBeGreaterThan(0);
    } finally {
      await proxy.close();
    }
  }, 420_000);
});

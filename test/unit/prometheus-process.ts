// A real Prometheus (Debian's package, scripts/system-packages.sh) for tests: its own temp dir and
// free port, a 1 s scrape and rule evaluation interval, the scrape jobs the test gives; queried
// through the HTTP API. Also the expressions to check: every query of the chart's Grafana dashboard
// with its variables substituted, and every alert rule's expression made to return a sample whatever
// the state (a `bool` comparison), so "returns data" means every series it reads exists and joins.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { parse as parseYaml, stringify as toYaml } from 'yaml';

export const rulesPath = join(import.meta.dirname, '..', '..', 'charts', 'npuserve', 'files', 'prometheus-rules.yaml');
export const dashboardPath = join(import.meta.dirname, '..', '..', 'charts', 'npuserve', 'files', 'grafana-dashboard.json');

export interface ScrapeJob {
  job_name: string;
  static_configs: Array<{ targets: string[]; labels?: Record<string, string> }>;
  honor_labels?: boolean;
}

export interface QueryResult {
  status: string;
  error?: string;
  data?: { resultType: string; result: Array<{ metric: Record<string, string>; value: [number, string] }> };
}

export interface PrometheusProcess {
  url: string;
  query(expr: string): Promise<QueryResult>;
  /** Resolves once every target has been scraped successfully at least `scrapes` times since the call. */
  scraped(scrapes?: number): Promise<void>;
  output(): string;
  stop(): Promise<void>;
}

export async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as AddressInfo;
  await new Promise((r) => s.close(r));
  return port;
}

export async function startPrometheus(jobs: ScrapeJob[], timeoutMs = 30_000): Promise<PrometheusProcess> {
  const dir = mkdtempSync(join(tmpdir(), 'npuserve-prometheus-'));
  const config = join(dir, 'prometheus.yml');
  writeFileSync(config, toYaml({ global: { scrape_interval: '1s', scrape_timeout: '900ms', evaluation_interval: '1s' }, rule_files: [rulesPath], scrape_configs: jobs }));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const proc: ChildProcess = spawn('prometheus', [`--config.file=${config}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.on('data', (b) => (out += b));
  proc.stderr!.on('data', (b) => (out += b));
  const spawned = new Promise<void>((resolve, reject) => {
    proc.once('spawn', resolve);
    proc.once('error', (e) => reject(new Error(`prometheus (Debian package prometheus, scripts/system-packages.sh) could not run: ${e.message}`)));
  });
  await spawned;
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  const deadline = Date.now() + timeoutMs;
  while ((await fetch(`${url}/-/ready`).catch(() => undefined))?.status !== 200) {
    if (proc.exitCode !== null || Date.now() > deadline) throw new Error(`prometheus did not become ready:\n${out}`);
    await sleep(100);
  }
  const targets = async () => ((await (await fetch(`${url}/api/v1/targets`)).json()) as { data: { activeTargets: Array<{ health: string; lastScrape: string; scrapeUrl: string; lastError: string }> } }).data.activeTargets;
  return {
    url,
    output: () => out,
    query: async (expr) => (await (await fetch(`${url}/api/v1/query?${new URLSearchParams({ query: expr })}`)).json()) as QueryResult,
    scraped: async (scrapes = 1) => {
      const since = Date.now();
      for (;;) {
        const ts = await targets();
        if (ts.length === jobs.length && ts.every((t) => t.health === 'up' && Date.parse(t.lastScrape) > since + (scrapes - 1) * 1000)) return;
        if (Date.now() > deadline + 60_000) throw new Error(`targets not scraped: ${JSON.stringify(ts)}\n${out}`);
        await sleep(200);
      }
    },
    stop: async () => {
      if (proc.exitCode === null) proc.kill('SIGTERM');
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

interface Dashboard {
  templating: { list: Array<{ name: string; type: string; query?: { query: string } | string }> };
  panels: Array<{ title: string; targets?: Array<{ expr: string }> }>;
}

/** Every PromQL the dashboard runs, with Grafana's variables substituted: panel queries and the variables' series. */
export function dashboardQueries(vars: Record<string, string>, rateInterval: string): Array<{ where: string; expr: string }> {
  const d = JSON.parse(readFileSync(dashboardPath, 'utf8')) as Dashboard;
  const subst = (e: string) => e.replaceAll('$__rate_interval', rateInterval).replace(/\$(\w+)/g, (_, v: string) => {
    if (!(v in vars)) throw new Error(`no value for dashboard variable $${v} in ${e}`);
    return vars[v];
  });
  const out: Array<{ where: string; expr: string }> = [];
  for (const v of d.templating.list.filter((x) => x.type === 'query')) {
    const q = typeof v.query === 'string' ? v.query : v.query!.query;
    // label_values(SELECTOR, label) is Grafana's; the selector is what Prometheus answers.
    const m = /^label_values\((.+),\s*\w+\)$/.exec(q);
    if (!m) throw new Error(`variable ${v.name}: expected label_values(selector, label), got ${q}`);
    out.push({ where: `variable ${v.name}`, expr: subst(m[1]) });
  }
  for (const p of d.panels) for (const t of p.targets ?? []) out.push({ where: `panel "${p.title}"`, expr: subst(t.expr) });
  return out;
}

/**
 * `a > b` becomes `a > bool b` (outside label matchers): a sample per matched series whether or not
 * the alert would fire, so an empty answer means a series the rule reads is missing or does not join.
 */
export function withBoolComparisons(expr: string): string {
  let out = '';
  let braces = 0;
  let quote = '';
  for (let i = 0; i < expr.length; i++) {
    const c = expr[i];
    if (quote) {
      out += c;
      if (c === '\\') out += expr[++i];
      else if (c === quote) quote = '';
      continue;
    }
    if (c === '"' || c === "'") quote = c;
    else if (c === '{') braces++;
    else if (c === '}') braces--;
    else if (braces === 0 && /[<>=!]/.test(c)) {
      const op = /^(==|!=|>=|<=|>|<)/.exec(expr.slice(i))![0];
      out += `${op} bool`;
      i += op.length - 1;
      continue;
    }
    out += c;
  }
  return out;
}

export interface AlertRule {
  alert: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

export function alertRules(): AlertRule[] {
  const file = parseYaml(readFileSync(rulesPath, 'utf8')) as { groups: Array<{ rules: AlertRule[] }> };
  return file.groups.flatMap((g) => g.rules);
}

export function ruleQueries(): Array<{ where: string; expr: string }> {
  return alertRules().map((r) => ({ where: `alert ${r.alert}`, expr: withBoolComparisons(r.expr.trim()) }));
}

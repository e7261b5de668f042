// The chart's alert rules (charts/npuserve/files/prometheus-rules.yaml) with the real promtool: the
// file checks, every alert has a promtool unit test that fires it and one that does not
// (prometheus-rules.promtool.yaml), and every alert names its runbook in docs/operations.md.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';

import { alertRules, rulesPath } from './prometheus-process.js';

const root = join(import.meta.dirname, '..', '..');
const promtoolTests = join(import.meta.dirname, 'prometheus-rules.promtool.yaml');

function promtool(...args: string[]) {
  const r = spawnSync('promtool', args, { encoding: 'utf8', timeout: 60_000 });
  if (r.error) throw new Error(`promtool (Debian package prometheus, scripts/system-packages.sh) could not run: ${r.error.message}`);
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

describe('alert rules', () => {
  it('pass promtool check rules', () => {
    const r = promtool('check', 'rules', rulesPath);
    expect(r.out).toContain(`SUCCESS: ${alertRules().length} rules found`);
    expect(r.code).toBe(0);
  });

  it('pass their promtool unit tests, which fire every alert once and leave it quiet once', () => {
    const r = promtool('test', 'rules', promtoolTests);
    expect(r.out).toContain('SUCCESS');
    expect(r.code).toBe(0);
    const tests = (parseYaml(readFileSync(promtoolTests, 'utf8')) as { tests: Array<{ alert_rule_test: Array<{ alertname: string; exp_alerts: unknown[] }> }> }).tests.flatMap((t) => t.alert_rule_test);
    for (const { alert } of alertRules()) {
      expect(tests.some((t) => t.alertname === alert && t.exp_alerts.length > 0), `${alert} fires in a test`).toBe(true);
      expect(tests.some((t) => t.alertname === alert && t.exp_alerts.length === 0), `${alert} stays quiet in a test`).toBe(true);
    }
  });

  it('have a severity, a summary, a description and a runbook_url pointing at their section of docs/operations.md', () => {
    const operations = readFileSync(join(root, 'docs', 'operations.md'), 'utf8');
    for (const r of alertRules()) {
      expect(r.labels?.severity, r.alert).toMatch(/^(critical|warning|info)$/);
      expect(r.annotations?.summary, r.alert).toBeTruthy();
      expect(r.annotations?.description, r.alert).toBeTruthy();
      expect(r.annotations?.runbook_url, r.alert).toBe(`https://github.com/npuserve/npuserve/blob/main/docs/operations.md#${r.alert.toLowerCase()}`);
      expect(operations, `docs/operations.md has a section "### ${r.alert}"`).toMatch(new RegExp(`^### ${r.alert}$`, 'm'));
    }
  });
});

// The repo's scripts that take flags follow the CLI's conventions: --help prints their usage, an
// unknown flag is one line naming it plus the usage with exit code 2 (no stack trace), and
// bench:autoscale's --json prints its summary as JSON.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

import { workDir } from './helpers.js';

const repo = join(import.meta.dirname, '..', '..');
const tsx = join(repo, 'node_modules', '.bin', 'tsx');

function script(file: string, ...args: string[]) {
  const r = spawnSync(tsx, [join(repo, file), ...args], { encoding: 'utf8', timeout: 60_000, cwd: repo });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const SCRIPTS: Array<[string, string]> = [
  ['bench:autoscale', 'operator/autoscaler/bench.ts'],
  ['bench:engine', 'runtime/bench/engine.ts'],
  ['bench:agreement', 'runtime/bench/agreement.ts'],
  ['bench:server', 'runtime/bench/server-load.ts'],
  ['bench:operator', 'test/bench/operator.ts'],
  ['validate:llamacpp', 'scripts/validate-llamacpp.ts'],
  ['docs:crd', 'scripts/crd-docs.ts'],
  ['docs:flags', 'scripts/flag-docs.ts'],
];

describe('scripts with flags', () => {
  it.each(SCRIPTS)('npm run %s: --help prints the usage; an unknown flag exits 2 with one line and the usage', (name, file) => {
    const help = script(file, '--help');
    expect(help.code, help.stderr).toBe(0);
    expect(help.stdout).toMatch(new RegExp(`^usage: npm run ${name} -- `));
    const bad = script(file, '--bogus');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toBe(`npm run ${name}: unknown option '--bogus'\n\n${help.stdout}`);
  });

  it('npm run bench:autoscale -- --json prints, per trace, every policy\'s summary as JSON', () => {
    const r = script('operator/autoscaler/bench.ts', '--json', '--trace', 'bursts', '--out', join(workDir, 'autoscale-bench'));
    expect(r.code, r.stderr).toBe(0);
    type PolicyResult = { policy: string; sloViolationSeconds: number; replicaSeconds: number; scaleEvents: number };
    const report = JSON.parse(r.stdout) as { results: Array<{ trace: string; policies: PolicyResult[] }> };
    expect(report.results.map((x) => x.trace)).toEqual(['bursts']);
    const policies = report.results[0]!.policies;
    expect(policies.map((x) => x.policy)).toEqual(['npuserve', 'npuserve-60s', 'npuserve-prompts', 'hpa', 'kubeai', 'knative']);
    for (const x of policies) {
      expect(x.replicaSeconds).toBeGreaterThan(0);
      expect(x.sloViolationSeconds).toBeGreaterThanOrEqual(0);
      expect(x.scaleEvents).toBeGreaterThan(0);
    }
    expect(existsSync(join(workDir, 'autoscale-bench', 'autoscale-bursts.svg'))).toBe(true);
  });
});

// test/cluster/build reports progress on its long steps: each binary gets a numbered line, and while
// a go build runs it prints the elapsed time and the packages compiled so far. Runs the real script
// against a stand-in `go` on PATH whose build of FAKE_SLOW takes a few seconds.
import { execFile } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';

const script = join(import.meta.dirname, '..', 'cluster', 'build');
const root = mkdtempSync(join(tmpdir(), 'npuserve-build-test-'));

/** A `go` that answers the script's calls: module metadata, `go get`, `go list -deps`, `go build -v`. */
function fakeGo(dir: string): string {
  const bin = join(dir, 'bin');
  mkdirSync(join(dir, 'kwok', 'kustomize', 'stage', 'node', 'fast'), { recursive: true });
  for (const f of ['node/fast/node-initialize.yaml', 'node/heartbeat-with-lease/node-heartbeat-with-lease.yaml', 'pod/fast/pod-ready.yaml', 'pod/fast/pod-complete.yaml', 'pod/fast/pod-delete.yaml']) {
    mkdirSync(join(dir, 'kwok', 'kustomize', 'stage', f, '..'), { recursive: true });
    writeFileSync(join(dir, 'kwok', 'kustomize', 'stage', f), `kind: Stage\nmetadata: { name: ${f} }\n`);
  }
  writeFileSync(join(dir, 'k8s.mod'), 'module k8s.io/kubernetes\n\nrequire (\n\tk8s.io/api v0.0.0\n\tk8s.io/client-go v0.0.0\n)\n');
  mkdirSync(bin, { recursive: true });
  writeFileSync(join(bin, 'go'), `#!/usr/bin/env bash
case "$1" in
  mod)
    if [[ "$4" == k8s.io/kubernetes@* ]]; then printf '{\\n\\t"GoMod": "%s",\\n}\\n' "${dir}/k8s.mod"; else printf '{\\n\\t"Dir": "%s",\\n}\\n' "${dir}/kwok"; fi ;;
  get)
    echo "go: downloading k8s.io/api v0.36.3" >&2 ;;
  list)
    printf 'fmt\\nk8s.io/fake/a\\nk8s.io/fake/b\\nk8s.io/fake/c\\n%s\\n' "$3" ;;
  build)
    out="" pkg="" prev=""
    for a in "$@"; do [[ "$prev" == -o ]] && out="$a"; prev="$a"; pkg="$a"; done
    if [[ "$pkg" == *"$FAKE_FAIL"* && -n "$FAKE_FAIL" ]]; then echo "# $pkg" >&2; echo "main.go:3:2: undefined: clientset" >&2; exit 1; fi
    if [[ -n "$FAKE_SLOW" && "$pkg" == *"$FAKE_SLOW" ]]; then
      for p in k8s.io/fake/a k8s.io/fake/b k8s.io/fake/c; do echo "$p" >&2; sleep 1.1; done
    fi
    echo "$pkg" >&2
    echo '#!/bin/sh' > "$out" ;;
  *) echo "fake go: unexpected call: $*" >&2; exit 2 ;;
esac
`);
  chmodSync(join(bin, 'go'), 0o755);
  return bin;
}

async function runBuild(name: string, env: Record<string, string> = {}): Promise<{ code: number; stderr: string; cache: string }> {
  const dir = join(root, name);
  const bin = fakeGo(dir);
  const cache = join(dir, 'cache');
  try {
    const { stderr } = await promisify(execFile)('bash', [script], {
      env: { ...process.env, PATH: `${bin}:${process.env.PATH}`, NPUSERVE_CACHE: cache, NPUSERVE_BUILD_PROGRESS_SECONDS: '1', ...env },
    });
    return { code: 0, stderr, cache };
  } catch (err) {
    const e = err as { code: number; stderr: string };
    return { code: e.code, stderr: e.stderr, cache };
  }
}

afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('test/cluster/build progress', () => {
  it('numbers each binary and prints elapsed time and compiled packages while a long build runs', async () => {
    const { code, stderr, cache } = await runBuild('ok', { FAKE_SLOW: 'cmd/kube-apiserver' });
    expect(code, stderr).toBe(0);
    expect(stderr).toContain('[cluster build] [2/9] go build kube-apiserver (k8s.io/kubernetes/cmd/kube-apiserver; 5 packages in its dependency graph');
    // At least two progress lines during the ~3.3 s build, each with the elapsed time and the count so far.
    const progress = stderr.split('\n').filter((l) => /^\[cluster build\] {3}\[2\/9\] kube-apiserver: 0m0\ds, \d of at most 5 packages compiled \(last: k8s\.io\/fake\/[abc]\)$/.test(l));
    expect(progress.length, stderr).toBeGreaterThanOrEqual(2);
    expect(stderr).toMatch(/\[2\/9\] kube-apiserver: done in 0m0[3-9]s, 4 of at most 5 packages compiled \(last: k8s\.io\/kubernetes\/cmd\/kube-apiserver\)/);
    expect(stderr).toMatch(/go get: done in 0m0\ds, 1 modules downloaded/);
    for (const b of ['etcd', 'kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kubectl', 'kwok', 'helm', 'kubelet', 'kube-proxy']) {
      expect(existsSync(join(cache, 'k8s-v1.36.3', 'bin', b))).toBe(true);
    }
  }, 60_000);

  it('a failing build shows the compiler message and names the binary', async () => {
    const { code, stderr } = await runBuild('fail', { FAKE_FAIL: 'cmd/kubectl' });
    expect(code).toBe(1);
    expect(stderr).toContain('main.go:3:2: undefined: clientset');
    expect(stderr).toContain('error: building kubectl from k8s.io/kubernetes/cmd/kubectl failed');
  }, 60_000);

  it('refuses a progress interval that is not a whole number of seconds', async () => {
    const { code, stderr } = await runBuild('bad-interval', { NPUSERVE_BUILD_PROGRESS_SECONDS: '0.5' });
    expect(code).toBe(1);
    expect(stderr).toContain("NPUSERVE_BUILD_PROGRESS_SECONDS must be a whole number of seconds >= 1, got '0.5'");
  });
});

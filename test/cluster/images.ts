// The images real nodes run, made from this checkout: the npuserve image (npm run image:build, so
// the tests run the code they test; podman's layer cache makes an unchanged rebuild take seconds)
// and a sandbox ("pause") image on top of it, saved as one archive that each node's containerd
// imports (no registry is involved).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { cacheDir, repoRoot } from './paths.js';

export interface NodeImages {
  npuserve: string;
  sandbox: string;
  /** podman save output holding both. */
  archive: string;
}

function podman(args: string[], input?: string): string {
  try {
    return execFileSync('podman', args, { input, env: { ...process.env, CONTAINERS_CONF: path.join(cacheDir(), 'image', 'containers.conf') }, stdio: ['pipe', 'pipe', 'pipe'] }).toString().trim();
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: Buffer };
    if (e.code === 'ENOENT') throw new Error('real nodes run the npuserve image, which needs podman to build (Debian: apt-get install podman buildah runc)');
    throw new Error(`podman ${args.join(' ')}: ${e.stderr?.toString().trim() || e.message}`);
  }
}

/** Builds (or reuses) the images and their archive; `log` gets a line per step. */
export function nodeImages(log: (line: string) => void): NodeImages {
  const version = (JSON.parse(fs.readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as { version: string }).version;
  const npuserve = `localhost/npuserve:${version}`;
  const sandbox = `localhost/npuserve-pause:${version}`;
  log(`building ${npuserve} from this checkout (npm run image:build; cached layers are reused)`);
  execFileSync('bash', [path.join(repoRoot, 'scripts', 'image-build.sh'), '--no-check', '--tag', npuserve], { stdio: ['ignore', 'ignore', 'inherit'] });
  // The sandbox holds each pod's namespaces and does nothing else; on top of the npuserve image it costs no layer of its own.
  const ctx = fs.mkdtempSync(path.join(os.tmpdir(), 'npuserve-pause-'));
  try {
    fs.writeFileSync(path.join(ctx, 'Containerfile'), `FROM ${npuserve}\nUSER 65535:65535\nENTRYPOINT ["sleep", "infinity"]\nCMD []\n`);
    podman(['build', '--network=none', '-t', sandbox, ctx]);
  } finally {
    fs.rmSync(ctx, { recursive: true, force: true });
  }
  const id = podman(['image', 'inspect', '--format', '{{.Id}}', npuserve]).slice(0, 12);
  const dir = path.join(cacheDir(), 'image');
  const archive = path.join(dir, `node-images-${id}.tar`);
  if (!fs.existsSync(archive)) {
    for (const old of fs.readdirSync(dir).filter((f) => f.startsWith('node-images-'))) fs.rmSync(path.join(dir, old), { force: true });
    log(`saving ${npuserve} and ${sandbox} for the nodes' containerd`);
    podman(['save', '-m', '-o', `${archive}.tmp`, npuserve, sandbox]);
    fs.renameSync(`${archive}.tmp`, archive);
  }
  return { npuserve, sandbox, archive };
}

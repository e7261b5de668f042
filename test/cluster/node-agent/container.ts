// How the node agent turns a container spec into a local process: which executable an image's
// command maps to, the environment it gets, and the rewriting of container paths to host dirs.
//
// Images: any image whose name contains `npuserve` runs this checkout's `bin/npuserve.js` with the
// running node binary (its entrypoint is `npuserve`); `node:*` images run this node; busybox-like
// images (busybox, alpine, debian, ubuntu, bash) run the host's programs (`sh -c ...`); `pause` sleeps.
// Other images run the given command if it exists on this host, else the container cannot start.
//
// Paths: there is no container filesystem. Every volume mount's mountPath that appears in the
// command, args, env values or workingDir (as a whole path or a path prefix) is replaced by the host
// directory backing that volume, so `--model /models/m.npu` becomes `--model <dir>/m.npu`.
import fs from 'node:fs';
import path from 'node:path';
import type { Container } from './types.js';

export interface ResolvedCommand {
  executable: string;
  args: string[];
}

/** A container that cannot be started locally; the message goes into its waiting state. */
export class ContainerConfigError extends Error {
  constructor(
    readonly reason: string,
    message: string,
  ) {
    super(message);
  }
}

const shellImages = ['busybox', 'alpine', 'debian', 'ubuntu', 'bash'];

/** The image's repository name without registry, tag or digest: `docker.io/library/node:20` -> `node`. */
export function imageBaseName(image: string): string {
  const withoutDigest = image.split('@')[0];
  const lastSegment = withoutDigest.split('/').pop() ?? withoutDigest;
  return lastSegment.split(':')[0];
}

function defaultEntrypoint(image: string): string[] | undefined {
  const base = imageBaseName(image);
  if (image.includes('npuserve')) return ['npuserve'];
  if (base === 'node') return ['node'];
  if (shellImages.includes(base)) return ['sh'];
  if (base === 'pause') return ['sleep', 'infinity'];
  return undefined;
}

function findOnPath(name: string, envPath: string): string | undefined {
  for (const dir of envPath.split(':')) {
    if (!dir) continue;
    const candidate = path.join(dir, name);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

export function resolveCommand(container: Container, repoRoot: string, envPath: string): ResolvedCommand {
  const entrypoint = container.command?.length ? container.command : defaultEntrypoint(container.image);
  if (!entrypoint) {
    throw new ContainerConfigError(
      'CreateContainerConfigError',
      `image ${container.image}: the local node agent does not know its entrypoint; give container '${container.name}' a command`,
    );
  }
  const [program, ...rest] = entrypoint;
  const args = [...rest, ...(container.args ?? [])];
  const name = path.basename(program);
  if (name === 'npuserve') return { executable: process.execPath, args: [path.join(repoRoot, 'bin', 'npuserve.js'), ...args] };
  if (name === 'node' || name === 'nodejs') return { executable: process.execPath, args };
  if (path.isAbsolute(program) && fs.existsSync(program)) return { executable: program, args };
  const found = findOnPath(name, envPath);
  if (!found) {
    throw new ContainerConfigError(
      'RunContainerError',
      `container '${container.name}' (image ${container.image}): executable '${program}' not found on this host`,
    );
  }
  return { executable: found, args };
}

/** Mount path -> host path, longest mount path first so nested mounts win. */
export type MountMap = Array<[mountPath: string, hostPath: string]>;

export function sortMounts(mounts: MountMap): MountMap {
  return [...mounts].sort((a, b) => b[0].length - a[0].length);
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Replaces container paths under any mount path by the host path (whole path components only, one pass). */
export function rewritePaths(text: string, mounts: MountMap): string {
  const byPath = new Map<string, string>();
  for (const [mountPath, hostPath] of sortMounts(mounts)) {
    const trimmed = mountPath.replace(/\/+$/, '');
    if (trimmed && !byPath.has(trimmed)) byPath.set(trimmed, hostPath);
  }
  if (byPath.size === 0) return text;
  const alternatives = [...byPath.keys()].map(escapeRegExp).join('|');
  const pattern = new RegExp(`(^|[^A-Za-z0-9_.\\-/])(${alternatives})(?=/|$|[^A-Za-z0-9_.\\-])`, 'g');
  return text.replace(pattern, (_, before: string, mountPath: string) => `${before}${byPath.get(mountPath)}`);
}

/** Kubernetes `$(VAR)` references in env values, command and args; `$$(` escapes to a literal `$(`. */
export function expandReferences(text: string, env: Record<string, string>): string {
  return text.replace(/\$\$\(|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)/g, (match, name?: string) => {
    if (match === '$$(') return '$(';
    return name !== undefined && env[name] !== undefined ? env[name] : match;
  });
}

// Opening a checkpoint's files without trusting them: regular files only (a FIFO or a device would
// block or never end), no symlink that leads out of the checkpoint's folder, and error messages that
// never quote what a file holds (a symlink to a secret must not come back as a parse error).
import { closeSync, constants, fstatSync, lstatSync, openSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { basename, dirname, join, sep } from 'node:path';

import { FormatError, jsonProblem } from '../errors.js';

/**
 * The real path its files must resolve inside: the folder itself, or for a Hugging Face cache
 * snapshot (`models--ORG--NAME/snapshots/REV`, whose files are symlinks to `../../blobs/HASH`) the
 * repository folder that holds both.
 */
export function realFolder(folder: string): string {
  let real: string;
  try {
    real = realpathSync(folder);
  } catch (e) {
    throw new FormatError(folder, `cannot be resolved (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  const snapshots = dirname(real), repo = dirname(snapshots);
  const isSnapshot = basename(snapshots) === 'snapshots' && /^(models|datasets)--/.test(basename(repo)) && isDirectory(join(repo, 'blobs'));
  return isSnapshot ? repo : real;
}

function isDirectory(path: string): boolean {
  try {
    return lstatSync(path).isDirectory();
  } catch {
    return false;
  }
}

/** Refuses `path` unless it resolves (through any symlinks) to a regular file inside `folderReal`. */
export function requireInside(folderReal: string, path: string): void {
  let real: string;
  try {
    real = realpathSync(path);
  } catch (e) {
    throw new FormatError(path, `cannot be resolved (${(e as NodeJS.ErrnoException).code ?? 'error'}; a dangling symlink?)`);
  }
  if (!real.startsWith(folderReal.endsWith(sep) ? folderReal : folderReal + sep))
    throw new FormatError(path, `is a symlink to a file outside the checkpoint folder ${folderReal}; copy the file into the folder (cp -L) instead`);
  if (!statSync(real).isFile()) throw new FormatError(path, 'is not a regular file');
}

/** Opens `path` for reading without blocking on a FIFO, and refuses anything but a regular file. */
export function openRegularFile(path: string): number {
  const fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  if (!fstatSync(fd).isFile()) {
    closeSync(fd);
    throw new FormatError(path, 'is not a regular file');
  }
  return fd;
}

/** True when `path` is a symlink (dangling or not). */
export function isSymlink(path: string): boolean {
  try {
    return lstatSync(path).isSymbolicLink();
  } catch {
    return false;
  }
}

/** A JSON file's value, or an error naming the file but not its content. */
export function readJsonFile(path: string): unknown {
  const fd = openRegularFile(path);
  let text: string;
  try {
    text = readFileSync(fd, 'utf8');
  } finally {
    closeSync(fd);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new FormatError(path, jsonProblem(e));
  }
}

// Errors a user can act on: every input problem names the file (or request) and what is wrong.

/** A problem with an input file: the message starts with the file's path. */
export class FormatError extends Error {
  constructor(
    readonly file: string,
    detail: string,
  ) {
    super(`${file}: ${detail}`);
    this.name = 'FormatError';
  }
}

export { UsageError } from '../common/errors.js';

/** Why JSON.parse failed, without the excerpt of the input V8 puts in its message (a file may hold secrets). */
export function jsonProblem(e: unknown): string {
  const at = /position (\d+)/.exec((e as Error).message);
  return at ? `not valid JSON (at character ${at[1]})` : 'not valid JSON';
}

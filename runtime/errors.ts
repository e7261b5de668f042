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

/** A problem with what the user asked for (flags, options, request fields). */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

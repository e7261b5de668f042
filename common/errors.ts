// The error kind every part shares: a problem with what the user asked for, which the command line
// reports in one line and answers with exit code 2.

/** A problem with what the user asked for (flags, options, request fields). */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

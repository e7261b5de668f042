// What a subcommand of `npuserve` is: its flags (which make its --help and the docs' tables) and
// what it runs with them, returning the process's exit code.
import type { CommandSpec, FlagValues } from '../common/flags.js';

export const EXIT = { ok: 0, error: 1, usage: 2, accuracyGate: 3 } as const;

export interface Command {
  spec: CommandSpec;
  run(flags: FlagValues): number | Promise<number>;
}

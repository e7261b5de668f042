// The `npuserve` command line: global --help and --version, and dispatch to a subcommand, which gets
// its own --help, its flags parsed once, and usage errors as one line with exit code 2.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

import { UsageError } from '../common/errors.js';
import { FlagError, helpText, parseFlags, wantsHelp } from '../common/flags.js';
import { type Command, EXIT } from './command.js';
import { gateway } from './gateway.js';
import { bench, chat, convert, generate, inspect, makeTestModel, pruneArtifacts } from './model-commands.js';
import { operator } from './operator.js';
import { serve } from './serve.js';

export { EXIT } from './command.js';

export const COMMANDS: Record<string, Command> = {
  convert,
  inspect,
  generate,
  chat,
  serve,
  bench,
  operator,
  gateway,
  'prune-artifacts': pruneArtifacts,
  'make-test-model': makeTestModel,
};

function globalUsage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((n) => n.length)) + 2;
  const commands = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}${c.spec.summary}`);
  return [
    'usage: npuserve <command> [flags]',
    '       npuserve <command> --help     the flags of one command',
    '       npuserve --version',
    '',
    'commands:',
    ...commands,
    '',
  ].join('\n');
}

/** The version in the package.json above this file (dist/cli/ when built, cli/ under tsx). */
export function packageVersion(): string {
  for (let dir = import.meta.dirname; dir !== dirname(dir); dir = dirname(dir)) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'npuserve' && pkg.version) return pkg.version;
    } catch {
      // No package.json here: look one folder up.
    }
  }
  throw new Error(`no package.json of npuserve above ${import.meta.dirname}`);
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === '--version' || name === '-V') {
    process.stdout.write(`${packageVersion()}\n`);
    return EXIT.ok;
  }
  if (name === '--help' || name === '-h' || (name === 'help' && rest.length === 0)) {
    process.stdout.write(globalUsage());
    return EXIT.ok;
  }
  if (name === 'help') return main([rest[0], '--help']);
  if (name === undefined) {
    process.stderr.write(globalUsage());
    return EXIT.usage;
  }
  const command = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
  if (!command) {
    process.stderr.write(`npuserve: unknown command '${name}'\n\n${globalUsage()}`);
    return EXIT.usage;
  }
  if (wantsHelp(rest)) {
    process.stdout.write(helpText(command.spec));
    return EXIT.ok;
  }
  try {
    return await command.run(parseFlags(command.spec, rest));
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    process.stderr.write(`npuserve ${name}: ${message}\n`);
    if (e instanceof FlagError) process.stderr.write(`\n${helpText(command.spec)}`);
    return e instanceof UsageError ? EXIT.usage : EXIT.error;
  }
}

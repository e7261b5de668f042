// Flag definitions as data, and everything made from them: the parser (node:util's parseArgs, with
// environment fallbacks and defaults), each command's --help, the docs' flag tables, and the
// one-line errors with exit code 2 that the `npuserve` command and the repo's scripts give.
import { parseArgs } from 'node:util';

import { UsageError } from './errors.js';

export interface Flag {
  name: string;
  /** The value's placeholder in help (`N`, `X.npu`); absent: a switch that takes no value. */
  value?: string;
  /** May be given more than once; the values are collected in order. */
  multiple?: boolean;
  /** The value when neither the flag nor its environment variable is given; help shows it. */
  default?: string;
  /** What help shows when the default is computed rather than fixed (`max(256, --max-batch-size)`). */
  defaultText?: string;
  /** Environment variable read when the flag is absent. */
  env?: string;
  required?: boolean;
  /** A switch that is on unless `--no-NAME` is given (as vLLM's `--enable-prefix-caching`). */
  negatable?: boolean;
  description: string;
}

export interface CommandSpec {
  /** How a user invokes it: `npuserve serve`, `npm run bench:autoscale --`. */
  name: string;
  /** One sentence: what the command does. */
  summary: string;
  /** What follows the name in the usage line; default: the required flags, then `[flags]`. */
  synopsis?: string;
  flags: Flag[];
}

export type FlagValues = Record<string, string | boolean | string[] | undefined>;

/** A flag that cannot be parsed at all (unknown, missing its value): the command's usage follows the message. */
export class FlagError extends UsageError {
  constructor(message: string) {
    super(message);
    this.name = 'FlagError';
  }
}

const HELP_FLAG: Flag = { name: 'help', description: 'print this help and exit' };

/** Whether the arguments ask for help (`--help` or `-h` anywhere before a `--`). */
export function wantsHelp(argv: readonly string[]): boolean {
  const end = argv.indexOf('--');
  return (end < 0 ? argv : argv.slice(0, end)).some((a) => a === '--help' || a === '-h');
}

/** node:util's messages, shortened to the one line a user needs (its hint about positionals does not apply: none are taken). */
function flagProblem(e: Error): string {
  const unknown = /Unknown option '([^']+)'/.exec(e.message);
  if (unknown) return `unknown option '${unknown[1]}'`;
  const positional = /Unexpected argument '([^']*)'/.exec(e.message);
  if (positional) return `unexpected argument '${positional[1]}' (every value follows its flag: --flag VALUE or --flag=VALUE)`;
  const missing = /Option '(?:-\w, )?(--[\w-]+) <value>' argument (missing|is ambiguous)/.exec(e.message);
  if (missing) return `${missing[1]} needs a value`;
  const extra = /Option '(?:-\w, )?(--[\w-]+)' does not take an argument/.exec(e.message);
  if (extra) return `${extra[1]} is a switch and takes no value`;
  return e.message.split('\n')[0];
}

/** Parses `argv` against `spec`: flag, else its environment variable, else its default; required flags checked. */
export function parseFlags(spec: CommandSpec, argv: readonly string[], env: NodeJS.ProcessEnv = process.env): FlagValues {
  const options = Object.fromEntries(
    spec.flags.flatMap((f) => {
      const option = { type: f.value ? ('string' as const) : ('boolean' as const), multiple: f.multiple ?? false };
      return f.negatable ? [[f.name, option], [`no-${f.name}`, option]] : [[f.name, option]];
    }),
  );
  let values: FlagValues;
  try {
    values = parseArgs({ args: [...argv], options, strict: true, allowPositionals: false }).values as FlagValues;
  } catch (e) {
    throw new FlagError(flagProblem(e as Error));
  }
  for (const f of spec.flags.filter((g) => g.negatable)) {
    const off = values[`no-${f.name}`] === true;
    if (off && values[f.name] === true) throw new UsageError(`--${f.name} and --no-${f.name} contradict each other; give one`);
    delete values[`no-${f.name}`];
    values[f.name] = !off;
  }
  for (const f of spec.flags) {
    const fromEnv = f.env === undefined ? undefined : env[f.env];
    if (values[f.name] === undefined && fromEnv !== undefined) values[f.name] = f.multiple ? fromEnv.split(',') : fromEnv;
    if (values[f.name] === undefined) values[f.name] = f.default;
    if (f.required && (values[f.name] === undefined || values[f.name] === '')) throw new UsageError(`--${f.name} is required`);
  }
  return values;
}

/** A flag's value as a string, or undefined when absent. */
export function stringFlag(values: FlagValues, name: string): string | undefined {
  const v = values[name];
  return typeof v === 'string' ? v : undefined;
}

/** An integer flag at least `min`, or undefined when absent (and without default). */
export function intFlag(values: FlagValues, name: string, min = 0): number | undefined {
  const v = stringFlag(values, name);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === '' || !Number.isSafeInteger(n) || n < min) throw new UsageError(`--${name} must be an integer >= ${min}, got '${v}'`);
  return n;
}

/** A finite number flag, or undefined when absent. */
export function numberFlag(values: FlagValues, name: string): number | undefined {
  const v = stringFlag(values, name);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n)) throw new UsageError(`--${name} must be a number, got '${v}'`);
  return n;
}

/** One of `choices`, or undefined when absent. */
export function choiceFlag<T extends string>(values: FlagValues, name: string, choices: readonly T[]): T | undefined {
  const v = stringFlag(values, name);
  if (v === undefined || (choices as readonly string[]).includes(v)) return v as T | undefined;
  throw new UsageError(`--${name} must be ${choices.slice(0, -1).join(', ')} or ${choices.at(-1)}, got '${v}'`);
}

function flagLabel(f: Flag): string {
  const label = `--${f.name}${f.value ? ` ${f.value}` : ''}`;
  return f.negatable ? `${label}, --no-${f.name}` : label;
}

/** A flag's default as help and docs show it: `required`, `8000`, `$NPUSERVE_BIND_ADDRESS, else 0.0.0.0`. */
function defaultNote(f: Flag): string {
  const value = f.defaultText ?? f.default ?? (f.negatable ? 'on' : undefined);
  const fallback = f.env ? [`$${f.env}`, value].filter(Boolean).join(', else ') : (value ?? '');
  return [f.required ? 'required' : '', fallback].filter(Boolean).join('; ');
}

function synopsis(spec: CommandSpec): string {
  if (spec.synopsis !== undefined) return spec.synopsis;
  return [...spec.flags.filter((f) => f.required).map(flagLabel), '[flags]'].join(' ');
}

/** A command's --help: usage line, summary, and every flag with its default. */
export function helpText(spec: CommandSpec): string {
  const flags = [...spec.flags, HELP_FLAG];
  const labelOf = (f: Flag) => (f === HELP_FLAG ? '-h, --help' : flagLabel(f));
  const width = Math.min(34, Math.max(...flags.map((f) => labelOf(f).length)) + 2);
  const lines = flags.map((f) => {
    const label = labelOf(f);
    const note = defaultNote(f);
    const text = `${f.description}${f.multiple ? ' (repeatable)' : ''}${note ? ` (${note === 'required' ? note : `default: ${note}`})` : ''}`;
    return label.length + 2 > width ? `  ${label}\n  ${' '.repeat(width)}${text}` : `  ${label.padEnd(width)}${text}`;
  });
  return `usage: ${spec.name} ${synopsis(spec)}\n\n${spec.summary}\n\nflags:\n${lines.join('\n')}\n`;
}

/** The docs' table of a command's flags (markdown), generated so docs cannot drift from help. */
export function flagTable(spec: CommandSpec): string {
  const cell = (s: string) => s.replace(/\|/g, '\\|');
  const rows = spec.flags.map((f) => `| \`${cell(flagLabel(f))}\` | ${cell(defaultNote(f).replace(/\$(\w+)/g, '`$$$1`'))} | ${cell(f.description)}${f.multiple ? ' (repeatable)' : ''} |`);
  return ['| flag | default | meaning |', '| --- | --- | --- |', ...rows].join('\n');
}

function usageFailure(spec: CommandSpec, e: unknown): number {
  const message = e instanceof Error ? e.message : String(e);
  process.stderr.write(`${spec.name.replace(/ --$/, '')}: ${message}\n${e instanceof FlagError ? `\n${helpText(spec)}` : ''}`);
  return e instanceof UsageError ? 2 : 1;
}

/** A script's flags: --help prints the help and exits 0; a usage error prints one line (and the usage when a flag cannot be parsed) and exits 2. */
export function scriptFlags(spec: CommandSpec, argv: readonly string[] = process.argv.slice(2)): FlagValues {
  if (wantsHelp(argv)) {
    process.stdout.write(helpText(spec));
    process.exit(0);
  }
  try {
    return parseFlags(spec, argv);
  } catch (e) {
    process.exit(usageFailure(spec, e));
  }
}

/** Runs a script's `main` with its flags (scriptFlags); a usage error in main exits 2, any other error prints its message and exits 1. */
export async function runScript(spec: CommandSpec, main: (values: FlagValues) => unknown, argv: readonly string[] = process.argv.slice(2)): Promise<void> {
  const values = scriptFlags(spec, argv);
  try {
    await main(values);
  } catch (e) {
    process.exitCode = usageFailure(spec, e);
  }
}

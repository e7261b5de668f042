// The one logger of the operator and the server: a line per event on stdout, as JSON (for log
// collectors) or as text (for people), dropping events below the chosen level.
import { UsageError } from './errors.js';
import type { Flag } from './flags.js';

export const LOG_LEVELS = ['debug', 'info', 'warn', 'error'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export const LOG_FORMATS = ['json', 'text'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];
export type LogFields = Record<string, unknown>;

type LogFn = (msg: string, fields?: LogFields) => void;

/** Called as a function it logs at info, so code written against a plain `(msg, fields)` callback takes it as is. */
export interface Logger extends LogFn {
  debug: LogFn;
  info: LogFn;
  warn: LogFn;
  error: LogFn;
  /** A logger adding `fields` to every line. */
  child(fields: LogFields): Logger;
}

export interface LoggerOptions {
  format: LogFormat;
  level: LogLevel;
  /** Fields on every line (component, identity). */
  base?: LogFields;
  /** Where lines go (default process.stdout). */
  write?: (line: string) => void;
}

/** `--log-format` and `--log-level` of a long-running command; JSON by default for log collectors, or text for people. */
export function logFlags(defaultFormat: LogFormat): Flag[] {
  return [
    { name: 'log-format', value: 'json|text', default: defaultFormat, description: 'one JSON object per line, or text for people' },
    { name: 'log-level', value: 'LEVEL', default: 'info', description: 'least severe events logged: debug, info, warn or error' },
  ];
}

export function logLevelOf(text: string): LogLevel {
  if ((LOG_LEVELS as readonly string[]).includes(text)) return text as LogLevel;
  throw new UsageError(`--log-level must be one of ${LOG_LEVELS.join(', ')}, got '${text}'`);
}

export function logFormatOf(text: string): LogFormat {
  if ((LOG_FORMATS as readonly string[]).includes(text)) return text as LogFormat;
  throw new UsageError(`--log-format must be json or text, got '${text}'`);
}

/** A text field value: bare when it is one plain word, else JSON-quoted so a line stays one line. */
function textValue(v: unknown): string {
  return typeof v === 'string' && /^[\w.:/@+-]+$/.test(v) ? v : JSON.stringify(v);
}

function formatLine(format: LogFormat, level: LogLevel, msg: string, fields: LogFields): string {
  const time = new Date().toISOString();
  if (format === 'json') return `${JSON.stringify({ time, level, msg, ...fields })}\n`;
  const pairs = Object.entries(fields)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => ` ${k}=${textValue(v)}`)
    .join('');
  return `${time} ${level.toUpperCase().padEnd(5)} ${msg.replace(/\n/g, '\\n')}${pairs}\n`;
}

export function createLogger(o: LoggerOptions): Logger {
  const write = o.write ?? ((line: string) => void process.stdout.write(line));
  const threshold = LOG_LEVELS.indexOf(o.level);
  const base = o.base ?? {};
  const at =
    (level: LogLevel): LogFn =>
    (msg, fields = {}) => {
      if (LOG_LEVELS.indexOf(level) >= threshold) write(formatLine(o.format, level, msg, { ...base, ...fields }));
    };
  const logger = at('info') as Logger;
  logger.debug = at('debug');
  logger.info = at('info');
  logger.warn = at('warn');
  logger.error = at('error');
  logger.child = (fields) => createLogger({ ...o, base: { ...base, ...fields } });
  return logger;
}

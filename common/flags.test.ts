// Flag parsing from definitions: flag over environment over default, --flag=value, required flags,
// and the one-line messages of unparseable arguments.
import { describe, expect, it } from 'vitest';

import { type CommandSpec, FlagError, flagTable, helpText, intFlag, parseFlags, wantsHelp } from './flags.js';

const spec: CommandSpec = {
  name: 'tool run',
  summary: 'Runs.',
  flags: [
    { name: 'model', value: 'X.npu', required: true, description: 'the model' },
    { name: 'port', value: 'N', default: '8000', description: 'listen port' },
    { name: 'host', value: 'ADDR', env: 'TOOL_HOST', default: '0.0.0.0', description: 'listen address' },
    { name: 'allow', value: 'HOST', multiple: true, description: 'allowed host' },
    { name: 'json', description: 'JSON output' },
  ],
};

describe('flags', () => {
  it('takes the flag, else its environment variable, else its default; --flag=value like --flag value', () => {
    expect(parseFlags(spec, ['--model=a.npu', '--allow', 'x', '--allow=y'], {})).toMatchObject({ model: 'a.npu', port: '8000', host: '0.0.0.0', allow: ['x', 'y'] });
    expect(parseFlags(spec, ['--model', 'a.npu'], { TOOL_HOST: '::1' }).host).toBe('::1');
    expect(parseFlags(spec, ['--model', 'a.npu', '--host=127.0.0.1'], { TOOL_HOST: '::1' }).host).toBe('127.0.0.1');
  });

  it.each([
    [[], '--model is required'],
    [['--model', ''], '--model is required'],
    [['--model', 'a', '--bogus'], "unknown option '--bogus'"],
    [['--model'], '--model needs a value'],
    [['--model', 'a', '--json=yes'], '--json is a switch and takes no value'],
    [['--model', 'a', 'extra'], "unexpected argument 'extra' (every value follows its flag: --flag VALUE or --flag=VALUE)"],
  ])('%j fails with %j', (argv, message) => {
    expect(() => parseFlags(spec, argv, {})).toThrow(message);
  });

  it('marks unparseable arguments as FlagError (the usage follows), bad values not', () => {
    expect(() => parseFlags(spec, ['--nope'], {})).toThrow(FlagError);
    expect(() => intFlag(parseFlags(spec, ['--model', 'a', '--port', '80x'], {}), 'port')).toThrow("--port must be an integer >= 0, got '80x'");
  });

  it('finds --help and -h before a --', () => {
    expect(wantsHelp(['--model', 'a', '-h'])).toBe(true);
    expect(wantsHelp(['--', '--help'])).toBe(false);
  });

  it('makes help and the docs table from the same definitions', () => {
    expect(helpText(spec)).toBe(
      [
        'usage: tool run --model X.npu [flags]',
        '',
        'Runs.',
        '',
        'flags:',
        '  --model X.npu  the model (required)',
        '  --port N       listen port (default: 8000)',
        '  --host ADDR    listen address (default: $TOOL_HOST, else 0.0.0.0)',
        '  --allow HOST   allowed host (repeatable)',
        '  --json         JSON output',
        '  -h, --help     print this help and exit',
        '',
      ].join('\n'),
    );
    expect(flagTable(spec).split('\n')).toEqual([
      '| flag | default | meaning |',
      '| --- | --- | --- |',
      '| `--model X.npu` | required | the model |',
      '| `--port N` | 8000 | listen port |',
      '| `--host ADDR` | `$TOOL_HOST`, else 0.0.0.0 | listen address |',
      '| `--allow HOST` |  | allowed host (repeatable) |',
      '| `--json` |  | JSON output |',
    ]);
  });
});

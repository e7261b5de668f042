// The docs' flag tables are the ones the flag definitions make (npm run docs:flags writes them), and
// every flag a command parses appears in its --help.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

import { COMMANDS } from '../../cli/main.js';
import { helpText } from '../../common/flags.js';
import { flagDocs } from '../../scripts/flag-docs.js';

describe("docs' flag tables", () => {
  it.each(flagDocs().map((d) => [d.path.replace(/.*\/docs\//, 'docs/'), d] as const))('%s is up to date with the flag definitions (run npm run docs:flags)', (_name, doc) => {
    expect(readFileSync(doc.path, 'utf8')).toBe(doc.text);
  });

  it('runtime-api.md and operations.md hold the serve and operator tables with every flag', () => {
    const docs = Object.fromEntries(flagDocs().map((d) => [d.path.replace(/.*\/docs\//, ''), d.text]));
    for (const [file, command] of [['runtime-api.md', 'serve'], ['operations.md', 'operator']] as const) {
      for (const f of COMMANDS[command].spec.flags) expect(docs[file]).toContain(`| \`--${f.name}`);
    }
  });

  it("lists all of the operator's flags in its help, the kubeconfig and context among them", () => {
    const help = helpText(COMMANDS.operator.spec);
    const flags = COMMANDS.operator.spec.flags.map((f) => f.name);
    expect(flags.length).toBeGreaterThanOrEqual(24);
    for (const name of [...flags, 'kubeconfig', 'context', 'source-host-paths', 'network-policy-namespaces', 'log-format']) expect(help).toContain(`--${name}`);
  });
});

#!/usr/bin/env node
// Entry point of the `npuserve` command: runs the compiled CLI (npm run build writes dist/).
import('../dist/cli/main.js').then((cli) => cli.main(process.argv.slice(2))).then(
  (code) => { process.exitCode = code ?? 0; },
  (err) => { console.error(`npuserve: ${err instanceof Error ? err.message : String(err)}`); process.exitCode = 1; },
);

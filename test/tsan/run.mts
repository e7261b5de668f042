// `npm run test:tsan`: builds the ThreadSanitizer addon (native/build-tsan), converts a tiny test model,
// then runs stress.mts in node with gcc's libtsan preloaded and that addon loaded. Fails on any
// ThreadSanitizer report with a frame in the addon. The node binary is not instrumented, so TSan cannot
// see V8's and libuv's own synchronisation: tsan.supp silences the known patterns, and any other report
// whose stacks lie wholly inside node is printed and counted apart, never as a failure.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { convert } from '../../runtime/convert/convert.js';
import { makeTestModel } from '../../runtime/testmodel.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');
execFileSync(process.execPath, [join(root, 'native', 'build.mjs'), '--tsan'], { stdio: ['ignore', 'inherit', 'inherit'] });
const libtsan = execFileSync('gcc', ['-print-file-name=libtsan.so'], { encoding: 'utf8' }).trim();
if (!libtsan.startsWith('/')) throw new Error(`gcc does not know libtsan.so (got '${libtsan}'): install gcc's ThreadSanitizer runtime (Debian: libtsan2)`);

const dir = mkdtempSync(join(tmpdir(), 'npuserve-tsan-'));
try {
  const model = makeTestModel(join(dir, 'model'), { layers: 2, hidden: 64, heads: 4, kvHeads: 2, intermediate: 96 });
  const npu = join(dir, 'model.npu');
  await convert({ input: model.dir, output: npu, precision: 'INT8', optimizeLevel: 2 });
  const started = performance.now();
  const run = spawnSync(process.execPath, ['--import', 'tsx', join(here, 'stress.mts'), npu], {
    cwd: root,
    encoding: 'utf8',
    env: {
      ...process.env,
      LD_PRELOAD: libtsan,
      NPUSERVE_ADDON: join(root, 'native', 'build-tsan', 'npuserve.node'),
      TSAN_OPTIONS: `suppressions=${join(here, 'tsan.supp')} halt_on_error=0 history_size=4 exitcode=0`,
    },
    timeout: 10 * 60 * 1000,
  });
  process.stdout.write(run.stdout);
  process.stderr.write(run.stderr);
  const { inAddon, insideNode } = classifyReports(run.stderr);
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  const nodeOnly = insideNode > 0 ? ` (${insideNode} reports wholly inside the uninstrumented node binary ignored)` : '';
  if (run.status !== 0 || inAddon > 0) {
    console.error(`test:tsan: FAILED in ${seconds} s (exit ${run.status ?? run.signal}, ${inAddon} ThreadSanitizer reports in the addon)${nodeOnly}`);
    process.exitCode = 1;
  } else {
    console.log(`test:tsan: clean in ${seconds} s (no ThreadSanitizer report in the addon)${nodeOnly}`);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}

/** Splits TSan's output into reports; one counts against the addon if any of its frames lies in it. */
function classifyReports(stderr: string): { inAddon: number; insideNode: number } {
  let inAddon = 0;
  let insideNode = 0;
  for (const report of stderr.split(/^WARNING: ThreadSanitizer/m).slice(1)) {
    const body = report.split(/^==================$/m)[0] ?? report;
    if (/npuserve\.node|native\/src\//.test(body)) inAddon++;
    else insideNode++;
  }
  return { inAddon, insideNode };
}

// Builds the native engine addon (native/build/npuserve.node) with CMake, offline: Node-API headers
// come from the node-api-headers and node-addon-api npm packages, never from a download.
// `--tsan` (or NPUSERVE_TSAN=1) builds a ThreadSanitizer-instrumented addon into native/build-tsan
// instead, for `npm run test:tsan`.
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpus } from 'node:os';

const require = createRequire(import.meta.url);
const here = dirname(fileURLToPath(import.meta.url));
const tsan = process.argv.includes('--tsan') || process.env.NPUSERVE_TSAN === '1';
const buildDir = join(here, tsan ? 'build-tsan' : 'build');
const napiInclude = require('node-api-headers').include_dir;
const addonApiInclude = dirname(require.resolve('node-addon-api/package.json'));
const buildType = process.env.NPUSERVE_BUILD_TYPE ?? (tsan ? 'RelWithDebInfo' : 'Release');

// Build progress goes to stderr, so a command that builds first (npm run bench:engine -- --json)
// keeps stdout for its own output.
function run(cmd, args) {
  execFileSync(cmd, args, { stdio: ['ignore', process.stderr, 'inherit'] });
}

run('cmake', [
  '-S', here, '-B', buildDir,
  `-DCMAKE_BUILD_TYPE=${buildType}`,
  `-DNODE_API_INCLUDE=${napiInclude}`,
  `-DNODE_ADDON_API_INCLUDE=${addonApiInclude}`,
  `-DNPUSERVE_TSAN=${tsan ? 'ON' : 'OFF'}`,
]);
run('cmake', ['--build', buildDir, '--parallel', String(Math.max(1, cpus().length))]);

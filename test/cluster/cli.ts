// Command line of the local cluster, run by the npm scripts:
//   npm run cluster:up -- [--npu-nodes N] [--cpu-nodes N] [--real-nodes N]
//   npm run cluster:down
//   npm run cluster:status
//   npm run cluster:nodes -- --npu N          add N simulated NPU nodes, print the time until Ready
// Each takes --cluster NAME for a named cluster (.cluster/NAME/state.json; the demo's is 'demo').
import { addNpuNodes, defaultUpOptions, down, isRunning, readState, up } from './cluster.js';
import { namedStateFile } from './paths.js';

function flag(args: string[], name: string): string | undefined {
  const i = args.findIndex((a) => a === `--${name}` || a.startsWith(`--${name}=`));
  if (i < 0) return undefined;
  return args[i].includes('=') ? args[i].split('=').slice(1).join('=') : args[i + 1];
}

function count(args: string[], name: string, fallback: number): number {
  const value = flag(args, name);
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new Error(`--${name} must be a whole number >= 0, got '${value}'`);
  return n;
}

async function main(argv: string[]): Promise<void> {
  const [command, ...args] = argv;
  const name = flag(args, 'cluster');
  // Every state-file lookup below (up, down, status, nodes, proxy) goes through paths.stateFile().
  if (name !== undefined) process.env.NPUSERVE_CLUSTER_STATE = namedStateFile(name);
  switch (command) {
    case 'up': {
      const state = await up({
        ...(name !== undefined ? { name } : {}),
        npuNodes: count(args, 'npu-nodes', defaultUpOptions.npuNodes),
        cpuNodes: count(args, 'cpu-nodes', defaultUpOptions.cpuNodes),
        realNodes: count(args, 'real-nodes', defaultUpOptions.realNodes),
      });
      console.log(`\nexport KUBECONFIG=${state.kubeconfig}\nexport PATH=${state.binDir}:$PATH   # kubectl, helm`);
      return;
    }
    case 'down':
      await down();
      return;
    case 'status': {
      const state = readState();
      if (!state || !isRunning(state)) {
        console.log('no local cluster is running');
        process.exitCode = 1;
        return;
      }
      console.log(JSON.stringify(state, null, 2));
      return;
    }
    case 'nodes': {
      const n = count(args, 'npu', 0);
      if (n === 0) throw new Error('usage: npm run cluster:nodes -- --npu N');
      const { names, seconds } = await addNpuNodes(n);
      console.log(`${names.length} simulated NPU nodes registered and Ready in ${seconds.toFixed(1)} s (${names[0]} .. ${names[names.length - 1]})`);
      return;
    }
    default:
      throw new Error(`unknown command '${command ?? ''}': use up, down, status or nodes`);
  }
}

main(process.argv.slice(2)).then(
  () => process.exit(process.exitCode ?? 0),
  (err: Error) => {
    console.error(`cluster: ${err.message}`);
    process.exit(1);
  },
);

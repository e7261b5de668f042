// `npuserve gateway`: the gateway's flags are defined beside its configuration (gateway/config.ts);
// this runs it with them. Its modules (express, the Kubernetes client) load only for this command.
import { gatewayConfig, GATEWAY_COMMAND } from '../gateway/config.js';
import type { Command } from './command.js';

export const gateway: Command = {
  spec: GATEWAY_COMMAND,
  async run(f) {
    const config = gatewayConfig(f);
    const { runGateway } = await import('../gateway/main.js');
    return runGateway(config);
  },
};

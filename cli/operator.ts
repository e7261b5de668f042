// `npuserve operator`: the operator's flags are defined beside its configuration (operator/config.ts);
// this runs it with them. The operator's modules (the Kubernetes client) load only for this command.
import { operatorConfig, OPERATOR_COMMAND } from '../operator/config.js';
import type { Command } from './command.js';

export const operator: Command = {
  spec: OPERATOR_COMMAND,
  async run(f) {
    const config = operatorConfig(f);
    const { runOperator } = await import('../operator/main.js');
    return runOperator(config);
  },
};

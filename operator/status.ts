// Standard conditions (type, status, reason, message, lastTransitionTime that changes only when the
// status flips) and the comparison that keeps status writes to real changes.
import type { Condition, NPUModelStatus } from './types.js';

export type ConditionType = 'Converted' | 'Available' | 'Progressing' | 'Degraded';

export function setCondition(conditions: Condition[], c: Omit<Condition, 'lastTransitionTime'>, now: string): Condition[] {
  const old = conditions.find((x) => x.type === c.type);
  const lastTransitionTime = old && old.status === c.status ? old.lastTransitionTime : now;
  return [...conditions.filter((x) => x.type !== c.type), { ...c, lastTransitionTime }].sort((a, b) => a.type.localeCompare(b.type));
}

export function condition(conditions: Condition[] | undefined, type: ConditionType): Condition | undefined {
  return conditions?.find((c) => c.type === type);
}

function stable(v: unknown): string {
  return JSON.stringify(v, (_k, val) => (val && typeof val === 'object' && !Array.isArray(val) ? Object.fromEntries(Object.entries(val).sort(([a], [b]) => a.localeCompare(b))) : val));
}

export function statusEqual(a: NPUModelStatus | undefined, b: NPUModelStatus): boolean {
  return stable(a ?? {}) === stable(b);
}

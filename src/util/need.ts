/**
 * Reads a state field an earlier step must have set, naming that step's absence clearly if the order
 * is ever wrong. Generic, so the build state and the narrower views of it (a provisioner's) share it.
 */
export function need<S extends object, K extends keyof S>(state: S, key: K): NonNullable<S[K]> {
  const v = state[key];
  if (v === undefined || v === null)
    throw new Error(`internal: build state "${String(key)}" is not set yet (a step ran out of order)`);
  return v as NonNullable<S[K]>;
}

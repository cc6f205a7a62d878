import type { BuildContext } from './state.js';

/** What a step leaves to undo; run in reverse order on success, failure or interrupt. */
export type Cleanup = () => Promise<void> | void;

export interface Step {
  /** Short, human: shown in logs and events ("create disk", "wait for SSH"). */
  name: string;
  /** Steps that do not apply to a build are skipped (e.g. no cloud-init seed without cloud-init). */
  enabled?: (ctx: BuildContext) => boolean;
  /** Runs even when the layer cache found the build up to date (the steps before it are skipped). */
  whenUpToDate?: boolean;
  run: (ctx: BuildContext) => Promise<Cleanup | void>;
}

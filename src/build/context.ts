/**
 * The one way a build context is made: runBuild() makes one per build, and the step tests' harness
 * (test/helpers/step-context.ts) makes theirs here too, so what a step sees in a test (the
 * `${build.*}` values above all) is what it sees in a build.
 */
import type { LoadedTemplate } from '../template/load.js';
import type { BuildConfig } from '../template/schema.js';
import type { Scalar } from '../template/interpolate.js';
import type { EventBus } from '../ui/events.js';
import type { BuildContext, BuildOptions, BuildState } from './state.js';

export interface BuildContextParts {
  template: LoadedTemplate;
  build: BuildConfig;
  /** With the driver the build's steps use (build() makes it from its `qemu` options; a fake one in step tests). */
  options: BuildOptions;
  events: EventBus;
  state: BuildState;
  signal: AbortSignal;
}

export function createBuildContext(parts: BuildContextParts): BuildContext {
  const { build, state, events, options } = parts;
  return {
    ...parts,
    driver: options.driver,
    buildValues: () => buildValues(build, state),
    log: (message, level = 'info') => events.emit({ type: 'log', build: build.name, level, message }),
  };
}

/** The `${build.*}` values known so far (they grow as the steps run). */
export function buildValues(build: BuildConfig, state: BuildState): Record<string, Scalar> {
  const v: Record<string, Scalar> = { name: build.name, output_dir: build.output_directory };
  if (state.http) {
    v.http_ip = state.http.ip;
    v.http_port = state.http.port;
    v.http_url = state.http.url;
  }
  if (state.buildKey) v.ssh_public_key = state.buildKey.publicKey;
  if (build.source.communicator.type === 'ssh') v.ssh_username = build.source.communicator.username;
  if (state.sshHostPort) {
    v.ssh_host = '127.0.0.1';
    v.ssh_port = state.sshHostPort;
  }
  // For a template's own -drive lines (Packer's {{ .OutputDir }}/{{ .Name }}, its iso_target_path).
  if (state.disk) v.disk = state.disk.path;
  if (state.base?.kind === 'iso') v.iso = state.base.path;
  return v;
}

/**
 * The shape of `kiln plan --json` (and of a Slurm run directory's plan.json): what each build of a
 * template would reuse and what it would build, in a form CI systems and job schedulers read without
 * any kiln code. `checkPlan` is its schema, written as code: the unit tests hold kiln's own output to
 * it, and it names the field that is wrong when a hand-edited plan.json is read back.
 */

/** Bumped when a field changes meaning or goes away (new fields do not bump it). */
export const PLAN_SCHEMA = 1;

/** One provisioner layer of a build. */
export interface PlanLayer {
  /** Index in the build's provisioners. */
  index: number;
  description: string;
  /** null from the first provisioner that cannot be cached onwards. */
  key: string | null;
  /** In this machine's layer cache. */
  local: boolean;
  /** In the remote cache: null when there is no remote cache or it was not asked. */
  remote: boolean | null;
  /** Why the layer cannot be cached, when it cannot. */
  uncacheable?: string;
}

export interface BuildPlan {
  name: string;
  output_directory: string;
  /** The key of the disk before any provisioner (base image and the settings that shape the disk); null while the base's digest is unknown. */
  root_key: string | null;
  /** Why no key is known yet (a base URL not downloaded and no sha256 checksum), when so. */
  unknown?: string;
  layers: PlanLayer[];
  /** The key of the finished, cleaned disk; null when the build has none (an uncached provisioner...). */
  final_key: string | null;
  final_cached: { local: boolean; remote: boolean | null };
  /** The key of the finished outputs; null when something must run on every build. */
  artifact_key: string | null;
  /**
   * What the build would do: nothing (up-to-date: its output directory holds these outputs), convert
   * the cached final disk without booting (from-final-layer), boot from a cached layer (resume), or all.
   */
  resume: 'up-to-date' | 'from-final-layer' | 'resume' | 'fresh';
  /** How many provisioner layers are reused: provisioning starts at layers[resume_at] (0: from the base image). */
  resume_at: number;
  /** Where the reused layers come from: null when nothing is reused. */
  resume_source: 'local' | 'remote' | null;
  /** Nothing boots: the outputs are in place or the final disk is cached (locally or remotely). */
  up_to_date: boolean;
  /** Why the build resumes earlier than its deepest cached layer, in words. */
  notes: string[];
}

/** Builds whose first keys are the same: building one builds the shared layers for the others. */
export interface PlanGroup {
  /** The last key every build of the group shares; null for a build whose keys are not known yet (alone in its group). */
  key: string | null;
  /** How many leading keys (root key first) they share (0 when unknown). */
  shared: number;
  builds: string[];
}

export interface KilnPlan {
  schema: typeof PLAN_SCHEMA;
  template: string;
  /** The remote cache asked, e.g. s3://bucket/prefix; null for the local cache only. */
  cache_remote: string | null;
  /** Present when the remote cache's intermediate layers were asked too (--cache-remote-intermediate). */
  cache_remote_intermediate?: true;
  builds: BuildPlan[];
  groups: PlanGroup[];
}

/** The keys a build goes through, root first, up to its first uncacheable layer. */
export function keyChain(b: Pick<BuildPlan, 'root_key' | 'layers'>): string[] {
  if (!b.root_key) return [];
  const keys = [b.root_key];
  for (const l of b.layers) {
    if (!l.key) break;
    keys.push(l.key);
  }
  return keys;
}

/**
 * Builds grouped by their root key; each group with the keys all its builds share. Every build is in
 * exactly one group (alone when it shares nothing), in the template's order, so a scheduler can give
 * each group one mutex (Slurm: one job name with --dependency=singleton).
 */
export function groupBuilds(builds: Pick<BuildPlan, 'name' | 'root_key' | 'layers'>[]): PlanGroup[] {
  const byRoot = new Map<string, { chains: string[][]; names: string[] }>();
  for (const b of builds) {
    // A build whose keys are unknown shares nothing that is known: alone, under its name.
    const id = b.root_key ?? `unknown:${b.name}`;
    const g = byRoot.get(id) ?? { chains: [], names: [] };
    g.chains.push(keyChain(b));
    g.names.push(b.name);
    byRoot.set(id, g);
  }
  return [...byRoot.values()].map(({ chains, names }) => {
    if (!chains[0]!.length) return { key: null, shared: 0, builds: names };
    let shared = 1;
    while (chains.every((c) => c.length > shared && c[shared] === chains[0]![shared])) shared++;
    return { key: chains[0]![shared - 1]!, shared, builds: names };
  });
}

const isKey = (v: unknown) => typeof v === 'string' && /^[0-9a-f]{16,128}$/.test(v);

/** Every problem with a parsed plan, each naming its field (empty: the plan has kiln's shape). */
export function checkPlan(value: unknown): string[] {
  const problems: string[] = [];
  const need = (ok: boolean, field: string, what: string) => {
    if (!ok) problems.push(`${field}: ${what}`);
  };
  if (!value || typeof value !== 'object' || Array.isArray(value)) return ['(top level): must be an object'];
  const p = value as Record<string, unknown>;
  need(
    p.schema === PLAN_SCHEMA,
    'schema',
    `must be ${PLAN_SCHEMA} (this kiln reads plan schema ${PLAN_SCHEMA}; write the plan again with this kiln)`,
  );
  need(typeof p.template === 'string', 'template', 'must be a string');
  need(p.cache_remote === null || typeof p.cache_remote === 'string', 'cache_remote', 'must be a string or null');
  need(
    p.cache_remote_intermediate === undefined || (p.cache_remote_intermediate === true && p.cache_remote !== null),
    'cache_remote_intermediate',
    'must be true, with cache_remote set, or absent',
  );
  if (!Array.isArray(p.builds)) {
    problems.push('builds: must be a list');
    return problems;
  }
  const names = new Set<string>();
  p.builds.forEach((raw, i) => {
    const at = `builds[${i}]`;
    if (!raw || typeof raw !== 'object') {
      problems.push(`${at}: must be an object`);
      return;
    }
    const b = raw as Record<string, unknown>;
    need(typeof b.name === 'string' && b.name !== '', `${at}.name`, 'must be a non-empty string');
    if (typeof b.name === 'string') {
      need(!names.has(b.name), `${at}.name`, `"${b.name}" appears twice`);
      names.add(b.name);
    }
    need(typeof b.output_directory === 'string', `${at}.output_directory`, 'must be a string');
    need(b.root_key === null || isKey(b.root_key), `${at}.root_key`, 'must be a hex key or null');
    need(b.final_key === null || isKey(b.final_key), `${at}.final_key`, 'must be a hex key or null');
    need(b.artifact_key === null || isKey(b.artifact_key), `${at}.artifact_key`, 'must be a hex key or null');
    need(
      ['up-to-date', 'from-final-layer', 'resume', 'fresh'].includes(b.resume as string),
      `${at}.resume`,
      'must be up-to-date, from-final-layer, resume or fresh',
    );
    need(
      b.resume_source === null || b.resume_source === 'local' || b.resume_source === 'remote',
      `${at}.resume_source`,
      'must be local, remote or null',
    );
    need(
      Array.isArray(b.notes) && b.notes.every((n) => typeof n === 'string'),
      `${at}.notes`,
      'must be a list of strings',
    );
    const fc = b.final_cached as Record<string, unknown> | undefined;
    need(
      !!fc && typeof fc.local === 'boolean' && (fc.remote === null || typeof fc.remote === 'boolean'),
      `${at}.final_cached`,
      'must be { local: boolean, remote: boolean | null }',
    );
    need(typeof b.up_to_date === 'boolean', `${at}.up_to_date`, 'must be a boolean');
    if (!Array.isArray(b.layers)) {
      problems.push(`${at}.layers: must be a list`);
      return;
    }
    need(
      Number.isInteger(b.resume_at) && (b.resume_at as number) >= 0 && (b.resume_at as number) <= b.layers.length,
      `${at}.resume_at`,
      `must be an integer from 0 to ${b.layers.length} (the number of layers)`,
    );
    b.layers.forEach((rawLayer, j) => {
      const l = rawLayer as Record<string, unknown>;
      const lat = `${at}.layers[${j}]`;
      need(Number.isInteger(l?.index), `${lat}.index`, 'must be an integer');
      need(typeof l?.description === 'string', `${lat}.description`, 'must be a string');
      need(l?.key === null || isKey(l?.key), `${lat}.key`, 'must be a hex key or null');
      need(typeof l?.local === 'boolean', `${lat}.local`, 'must be a boolean');
      need(l?.remote === null || typeof l?.remote === 'boolean', `${lat}.remote`, 'must be a boolean or null');
    });
  });
  if (!Array.isArray(p.groups)) {
    problems.push('groups: must be a list');
    return problems;
  }
  const grouped = new Set<string>();
  p.groups.forEach((raw, i) => {
    const g = raw as Record<string, unknown>;
    need(g?.key === null || isKey(g?.key), `groups[${i}].key`, 'must be a hex key or null');
    need(
      Number.isInteger(g?.shared) && (g.shared as number) >= (g?.key === null ? 0 : 1),
      `groups[${i}].shared`,
      'must be an integer, >= 1 when the key is known',
    );
    if (!Array.isArray(g?.builds)) {
      problems.push(`groups[${i}].builds: must be a list`);
      return;
    }
    for (const n of g.builds) {
      need(names.has(n as string), `groups[${i}].builds`, `"${String(n)}" is not a build of the plan`);
      need(!grouped.has(n as string), `groups[${i}].builds`, `"${String(n)}" is in two groups`);
      grouped.add(n as string);
    }
  });
  for (const n of names) need(grouped.has(n), 'groups', `build "${n}" is in no group`);
  return problems;
}

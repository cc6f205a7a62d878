/**
 * The provisioner kinds: one module each, listed once here. Adding a kind is its module (with its
 * test), one line in this table and one in src/provisioners/index.ts's table of runners, which the
 * compiler checks against this one. The template's provisioner schema, `Provisioner` type and every
 * per-kind fact (paths, layer-key inputs, cacheability, Packer mapping) come from here.
 */
import { z } from 'zod';
import type { ProvisionerKind } from './kind.js';
import { shell } from './shell.js';
import { file } from './file.js';
import { shellLocal } from './shell-local.js';
import { breakpoint } from './breakpoint.js';
import { ansible } from './ansible.js';
import { ansibleLocal } from './ansible-local.js';
import { puppetMasterless } from './puppet-masterless.js';

/** In the order kiln lists them (error messages, docs). */
export const provisionerKinds = {
  shell,
  file,
  'shell-local': shellLocal,
  breakpoint,
  ansible,
  'ansible-local': ansibleLocal,
  'puppet-masterless': puppetMasterless,
};

export type ProvisionerType = keyof typeof provisionerKinds;
type KindSchema = (typeof provisionerKinds)[ProvisionerType]['schema'];

export const provisionerSchema = z.discriminatedUnion(
  'type',
  Object.values(provisionerKinds).map((k) => k.schema) as [KindSchema, ...KindSchema[]],
);
export type Provisioner = z.output<typeof provisionerSchema>;
export type ProvisionerOf<T extends ProvisionerType> = Extract<Provisioner, { type: T }>;

// Each entry's key is its schema's `type`: a kind filed under another name fails here.
provisionerKinds satisfies { [T in ProvisionerType]: ProvisionerKind<ProvisionerOf<T>> };

/** The kind of `p`, typed for `p` (a table lookup TypeScript cannot correlate by itself). */
export function kindOf<P extends Provisioner>(p: P): ProvisionerKind<P> {
  return provisionerKinds[p.type] as unknown as ProvisionerKind<P>;
}

export function isProvisionerType(type: string): type is ProvisionerType {
  return Object.hasOwn(provisionerKinds, type);
}

export const provisionerTypes = Object.keys(provisionerKinds) as ProvisionerType[];

export function describeProvisioner(p: Provisioner): string {
  return kindOf(p).describe(p);
}

export function appliesTo(p: Provisioner, buildName: string): boolean {
  if (p.only && !p.only.includes(buildName)) return false;
  if (p.except?.includes(buildName)) return false;
  return true;
}

/** "a, b and c" */
export const listed = (names: readonly string[]) =>
  names.length > 1 ? `${names.slice(0, -1).join(', ')} and ${names[names.length - 1]}` : names.join('');

/** The kinds that need `what` to reach the guest, in table order. */
export const kindsNeeding = (what: ProvisionerKind<Provisioner>['needs']) =>
  provisionerTypes.filter((t) => provisionerKinds[t].needs === what);

/** Why `provisioners` cannot run with communicator "none": one line per need (any communicator, SSH itself) that one of them has. */
export function withoutCommunicatorProblems(provisioners: readonly Provisioner[]): string[] {
  const problems: string[] = [];
  const needed = (what: 'communicator' | 'ssh') => provisioners.some((p) => kindOf(p).needs === what);
  if (needed('communicator'))
    problems.push(`${listed(kindsNeeding('communicator'))} provisioners need a communicator, but it is "none"`);
  if (needed('ssh'))
    problems.push(
      `${listed(kindsNeeding('ssh'))} provisioners reach the guest over SSH, but the communicator is "none"`,
    );
  return problems;
}

/**
 * What kiln takes from a Packer template, whichever language it was written in (HCL or legacy JSON):
 * the builds Packer would run, each with its source's fields, provisioners and post-processors in
 * written order, every value evaluated and every field carrying the file:line it was written at.
 */
import type { Value } from './eval.js';

export interface Where {
  file: string;
  line: number;
}
export interface Field {
  value: Value;
  at: Where;
  /** The variables and locals its value was computed from, where each was written (a -var-file's line, a local's line). */
  via?: { ref: string; at: Where }[];
}

export interface PackerSource {
  type: string;
  name: string;
  fields: Map<string, Field>;
  at: Where;
  /** What Packer's {{ build_name }} renders to, when it is not `name`: in HCL the source block's own name (a build's `name =` override does not change it). */
  buildName?: string;
}
export interface PackerStep {
  type: string;
  fields: Map<string, Field>;
  at: Where;
  only?: string[];
  except?: string[];
}

export interface PackerBuild {
  /** As Packer names it for -only: "qemu.name", or "build.qemu.name" when the build block is named. */
  fullName: string;
  source: PackerSource;
  provisioners: PackerStep[];
  /** Each inner list is one chain (post-processors { ... } or a JSON array). */
  postProcessors: PackerStep[][];
}

export interface PackerVariable {
  name: string;
  value: Value;
  sensitive: boolean;
  from: string;
  at?: Where;
}

/**
 * A text kiln must never print: a sensitive variable's value (or one element of a sensitive list or
 * map), a value computed from one, or a value read from a file by file()/templatefile().
 */
export interface PackerSecret {
  text: string;
  /** 'variable': a sensitive variable's own value; 'derived': computed from one; 'file': read from a file (masked, not a variable). */
  kind: 'variable' | 'derived' | 'file';
  /** The variables (var.NAME, local.NAME) it comes from. */
  from: string[];
  /** A kiln variable name for it (ssh_password, keys_0, creds_user), used by kiln import. */
  name: string;
  at?: Where;
  /** The value was a number (a kiln variable of type number stands for it). */
  number?: true;
}

export interface PackerProblem {
  at?: Where;
  field?: string;
  message: string;
  fix?: string;
}

export class PackerTemplateError extends Error {
  /**
   * `partial`: the template as read despite the problems, so that its builds' own problems (the mapping's)
   * are reported in the same run; `consequences`: "file:line"s of fields that read a value that is missing
   * because of one of these problems (a required variable not set), whose further problems are not news.
   */
  constructor(
    readonly problems: PackerProblem[],
    readonly partial?: PackerTemplate,
    readonly consequences?: Set<string>,
  ) {
    super(problems.map(formatPackerProblem).join('\n'));
    this.name = 'PackerTemplateError';
  }
}

export function formatPackerProblem(p: PackerProblem): string {
  const where = p.at ? `${p.at.file}:${p.at.line}: ` : '';
  return `${where}${p.field ? `${p.field}: ` : ''}${p.message}${p.fix ? `\n  fix: ${p.fix}` : ''}`;
}

export interface PackerTemplate {
  /** The file named on the command line (or the folder's first *.pkr.hcl). */
  file: string;
  dir: string;
  language: 'hcl' | 'json';
  description?: string;
  variables: PackerVariable[];
  builds: PackerBuild[];
  /** Builds of other builders (amazon-ebs...), by full name, with where they are. */
  refused: { fullName: string; type: string; at: Where }[];
  /** The bytes read, for the manifest's template digest. */
  text: string;
  /** Every text that must not be printed (see PackerSecret), in the order found. */
  secrets: PackerSecret[];
  /** One-line warnings found while reading (e.g. {{user}} of variables set nowhere), printed before a build. */
  notes?: string[];
}

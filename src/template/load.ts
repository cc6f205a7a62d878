/**
 * Loads a template: YAML or JSON -> variables resolved -> `${var.*}` interpolated -> schema-checked ->
 * relative paths made absolute against the template's folder and checked to exist. Every failure is a
 * TemplateError naming the file, the line, the field and the fix; nothing is created on disk.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import YAML, { LineCounter, isMap, isScalar, isSeq, type Node } from 'yaml';
import { z } from 'zod';
import { artifactName } from './output-formats.js';
import { defaultCacheDir } from '../util/cache-dir.js';
import {
  TemplateError,
  closest,
  maskTemplateError,
  problemsFromZod,
  type FieldProblem,
  type KeyHints,
} from './errors.js';
import { interpolateTree } from './interpolate.js';
import { outputDirectoryProblems, protectedPlaces } from './output-directories.js';
import { resolveBuildPaths } from './paths.js';
import { qemuArgsProblems, smbiosType1Switch } from './qemu-args.js';
import { memoryFit } from '../qemu/memory.js';
import { applyArchDefaults } from '../qemu/arch.js';
import { withoutCommunicatorProblems } from './provisioner-kinds/index.js';
import {
  knownKeysAt,
  packerSourceAliases,
  templateSchema,
  variableName,
  variableSchema,
  mediaOf,
  type BuildSpec,
  type Template,
} from './schema.js';
import { resolveVariables, type ResolvedVariables, type VariableInputs } from './variables.js';
import { isPackerTemplate, packerLines, readPackerTemplate } from './packer/index.js';
import { escapeKilnVars } from './packer/gotemplate.js';

export interface LoadedTemplate {
  file: string;
  dir: string;
  template: Template;
  variables: ResolvedVariables;
  /** sha256 of the template file's bytes, recorded in the manifest. */
  digest: string;
  /** One-line warnings (a Packer template's fields kiln ignores), printed before anything runs. */
  notes?: string[];
  /** A Packer template's builds that --only/--except left out while loading (they are not in template.builds). */
  excluded?: string[];
}

export interface LoadOptions {
  /** The layer cache the build would use, which no output directory may be or hold (default: defaultCacheDir()). */
  cacheDir?: string;
  /** Builds asked for with --only: a Packer template's other builders are refused only when selected. */
  only?: string[];
  /** Builds skipped with --except: a Packer template's builders left out are neither refused nor checked. */
  except?: string[];
  /** Values to mask in every problem beside the template's own sensitive variables (a Packer template's, resolved before). */
  secrets?: string[];
  /** Where an input path that must exist is read from (an offline build: a bundle's copy of a path the recording machine had). */
  mapPath?: (p: string) => string;
}

/** A fix for the YAML mistakes people make most, by the YAML library's error code. */
const syntaxFixes: Partial<Record<string, string>> = {
  TAB_AS_INDENT: 'indent with spaces, not tabs',
  BAD_INDENT: 'line this key up with the other keys of its map',
  MISSING_CHAR: 'close the quote or bracket that is left open before this line',
  DUPLICATE_KEY: 'remove one of the two, or rename it',
  UNEXPECTED_TOKEN: 'look just before this point for a missing "," or ":" or an unclosed bracket',
  BLOCK_IN_FLOW: 'look just before this point for a missing "," or ":" or an unclosed bracket',
};

const knownBuildValues = [
  'name',
  'http_ip',
  'http_port',
  'http_url',
  'ssh_public_key',
  'ssh_username',
  'output_dir',
  'ssh_host',
  'ssh_port',
  'disk',
  'iso',
];

/** Suggestions for unknown keys: the keys the schema allows there, and Packer's names in a source. */
function keyHints(raw: unknown): KeyHints {
  return {
    keysAt: (p) => knownKeysAt(p, raw),
    aliasesAt: (p) => (p.length === 3 && p[0] === 'builds' && p[2] === 'source' ? packerSourceAliases : undefined),
  };
}

/** The line of the node at a path, or of its nearest existing parent. */
function lineOf(doc: YAML.Document, counter: LineCounter, p: (string | number)[]): number | undefined {
  for (let n = p.length; n >= 0; n--) {
    const node = doc.getIn(p.slice(0, n), true) as Node | undefined;
    if (node && (isScalar(node) || isMap(node) || isSeq(node)) && node.range) {
      // For an unknown key, point at the key itself rather than its parent map.
      if (n === p.length - 1 && isMap(node)) {
        const pair = node.items.find((it) => isScalar(it.key) && it.key.value === p[n]);
        if (pair && isScalar(pair.key) && pair.key.range) return counter.linePos(pair.key.range[0]).line;
      }
      return counter.linePos(node.range[0]).line;
    }
  }
  return undefined;
}

/** Deeper than any template needs; the limit keeps every later recursive walk far from the stack's end. */
const maxDepth = 64;

/**
 * A YAML alias may point at a node that contains it, which makes an endless tree; and nesting can be
 * deeper than the stack. Either is refused here, before anything walks the tree recursively.
 */
function treeShapeProblem(raw: unknown): FieldProblem | undefined {
  const stack: { node: unknown; path: (string | number)[]; ancestors: Set<unknown> }[] = [
    { node: raw, path: [], ancestors: new Set() },
  ];
  while (stack.length) {
    const { node, path: at, ancestors } = stack.pop()!;
    if (!node || typeof node !== 'object') continue;
    if (ancestors.has(node))
      return {
        path: at,
        message: 'an alias (*name) refers to a map or list that contains it, which never ends',
        fix: 'replace the alias with a copy of what it should contain',
      };
    if (at.length > maxDepth)
      return {
        path: at.slice(0, 3),
        message: `nested more than ${maxDepth} levels deep`,
        fix: 'flatten it: no template field nests that deep',
      };
    const inner = new Set(ancestors).add(node);
    const entries: [string | number, unknown][] = Array.isArray(node)
      ? node.map((v, i) => [i, v])
      : Object.entries(node);
    for (const [k, v] of entries) stack.push({ node: v, path: [...at, k], ancestors: inner });
  }
  return undefined;
}

export function loadTemplate(file: string, inputs: VariableInputs = {}, options: LoadOptions = {}): LoadedTemplate {
  const abs = path.resolve(file);
  if (isPackerTemplate(abs)) return loadPackerTemplate(abs, inputs, options);
  let text: string;
  try {
    text = readFileSync(abs, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new TemplateError(file, [
      {
        path: [],
        message: code === 'ENOENT' ? 'template file not found' : `cannot read template: ${(e as Error).message}`,
        fix: 'check the path given to kiln',
      },
    ]);
  }
  const counter = new LineCounter();
  const syntaxFix = 'fix the YAML/JSON syntax at that line (indentation, quotes, a missing ":")';
  // The YAML library's own message ends with the offending lines and a caret: keep them, indented.
  const syntaxMessage = (message: string) => {
    const [first = '', ...context] = message.split('\n');
    return [
      'syntax error: ' + first.replace(/:$/, ''),
      ...context.filter((l) => l.trim()).map((l) => `      ${l}`),
    ].join('\n');
  };
  let doc: YAML.Document;
  let raw: unknown;
  try {
    doc = YAML.parseDocument(text, { lineCounter: counter, prettyErrors: true, uniqueKeys: true });
    if (doc.errors.length) {
      // Only the first: later syntax errors are usually echoes of it.
      throw new TemplateError(
        file,
        doc.errors.slice(0, 1).map((err) => ({
          path: [],
          line: err.linePos?.[0]?.line,
          message: syntaxMessage(err.message),
          fix: syntaxFixes[err.code] ?? syntaxFix,
        })),
      );
    }
    raw = doc.toJS() as unknown;
  } catch (e) {
    if (e instanceof TemplateError) throw e;
    // The YAML library's own limits (alias expansion, nesting too deep for the stack) are input errors too.
    throw new TemplateError(file, [
      {
        path: [],
        message: `cannot read the YAML: ${(e as Error).message?.split('\n')[0] ?? String(e)}`,
        fix: syntaxFix,
      },
    ]);
  }
  const withLines = (problems: FieldProblem[]) =>
    problems.map((p) => ({ ...p, line: p.line ?? lineOf(doc, counter, p.path) }));
  const shapeProblem = treeShapeProblem(raw);
  if (shapeProblem) throw new TemplateError(file, withLines([shapeProblem]));
  if (raw === null || raw === undefined) {
    throw new TemplateError(file, [
      {
        path: [],
        message: 'the template is empty',
        fix: 'describe at least one build under "builds:"; see examples/tiny.yaml',
      },
    ]);
  }
  if (typeof raw !== 'object' || Array.isArray(raw)) {
    throw new TemplateError(file, [
      {
        path: [],
        message: `a template is a map with "builds:" (and optionally "variables:"), not ${Array.isArray(raw) ? 'a list' : 'a single value'}`,
        fix: 'see examples/tiny.yaml',
      },
    ]);
  }
  return checkTemplate(file, text, raw as Record<string, unknown>, withLines, inputs, options);
}

/** A Packer template (src/template/packer/), mapped to kiln's fields, then checked like any template. */
function loadPackerTemplate(abs: string, inputs: VariableInputs, options: LoadOptions): LoadedTemplate {
  const p = readPackerTemplate(abs, inputs, options.only, options.except);
  // Packer's variables are resolved already: kiln's own (KILN_VAR_*) do not apply.
  let loaded: LoadedTemplate;
  try {
    loaded = checkTemplate(
      p.template.file,
      p.template.text,
      escapeKilnVars(p.mapped.raw),
      packerLines(p.mapped, p.template.file, p.template),
      { env: {} },
      { ...options, secrets: [...(options.secrets ?? []), ...p.secrets] },
    );
  } catch (e) {
    // A file read outside the template's folder is said even when the template fails a later check.
    if (e instanceof TemplateError && p.outsideReads.length)
      throw new TemplateError(e.file, [
        ...e.problems,
        ...p.outsideReads.map((n) => ({ path: [], message: `note: ${n}` })),
      ]);
    throw e;
  }
  for (const v of p.template.variables) {
    if (typeof v.value !== 'string' && typeof v.value !== 'number' && typeof v.value !== 'boolean') continue;
    loaded.variables.values[v.name] = v.value;
    loaded.variables.origin[v.name] = v.from;
    if (v.sensitive) loaded.variables.sensitive.add(v.name);
  }
  loaded.variables.secrets.push(...p.secrets.filter((s) => s.length >= 3 && !loaded.variables.secrets.includes(s)));
  loaded.notes = [...p.mapped.notes, ...(loaded.notes ?? [])];
  if (p.excluded.length) loaded.excluded = p.excluded;
  return loaded;
}

/**
 * The checks every template goes through once it is a tree of kiln's shape (from YAML/JSON, or from a
 * Packer template by src/template/packer/): variables, interpolation, schema, paths, cross-field rules.
 * `withLines` gives each problem the line of its field in the file the user wrote.
 */
export function checkTemplate(
  file: string,
  text: string,
  raw: Record<string, unknown>,
  withLines: (problems: FieldProblem[]) => FieldProblem[],
  inputs: VariableInputs = {},
  options: LoadOptions = {},
): LoadedTemplate {
  const abs = path.resolve(file);
  const hints = keyHints(raw);

  // Variables first: their definitions decide how everything else is interpolated.
  const rawVars = (raw as Record<string, unknown>).variables ?? {};
  const defs = z.record(variableName, variableSchema).safeParse(rawVars, { reportInput: true });
  if (!defs.success) {
    throw new TemplateError(
      file,
      withLines(
        problemsFromZod(defs.error, { keysAt: (p) => hints.keysAt(['variables', ...p]) }).map((p) => ({
          ...p,
          path: ['variables', ...p.path],
        })),
      ),
    );
  }
  let variables: ResolvedVariables;
  try {
    variables = resolveVariables(defs.data, inputs, file);
  } catch (e) {
    if (e instanceof TemplateError) throw new TemplateError(file, withLines(e.problems));
    throw e;
  }
  // From here on a problem may quote a value filled in from a sensitive variable (a schema error, a path
  // not found): every problem is masked, the short values too where a whole value is quoted.
  const secrets = [
    ...new Set([
      ...variables.secrets,
      ...[...variables.sensitive].map((n) => String(variables.values[n])),
      ...(options.secrets ?? []),
    ]),
  ];
  try {
    return checkResolved(file, text, raw, withLines, inputs, options, variables, { ...hints, secrets });
  } catch (e) {
    if (e instanceof TemplateError) throw maskTemplateError(e, secrets);
    throw e;
  }
}

function checkResolved(
  file: string,
  text: string,
  raw: Record<string, unknown>,
  withLines: (problems: FieldProblem[]) => FieldProblem[],
  inputs: VariableInputs,
  options: LoadOptions,
  variables: ResolvedVariables,
  hints: KeyHints,
): LoadedTemplate {
  const abs = path.resolve(file);
  const rawVars = (raw as Record<string, unknown>).variables ?? {};

  const problems: FieldProblem[] = [];
  const { variables: _defs, ...rest } = raw as Record<string, unknown>;
  const interpolated = interpolateTree(
    rest,
    { var: variables.values },
    (miss) => {
      if (miss.namespace !== 'var') return;
      const guess = closest(miss.name, Object.keys(variables.values));
      problems.push({
        path: miss.path,
        message: `undefined variable "${miss.name}"`,
        fix: `declare "${miss.name}" under "variables:" or fix the reference \${var.${miss.name}}${guess ? ` (did you mean \${var.${guess}}?)` : ''}`,
      });
    },
    'var',
  );
  if (problems.length) throw new TemplateError(file, withLines(problems));

  const parsed = templateSchema.safeParse({ ...interpolated, variables: rawVars }, { reportInput: true });
  if (!parsed.success) throw new TemplateError(file, withLines(problemsFromZod(parsed.error, hints)));
  // The parsed builds become BuildSpecs here: output_directory and media are filled in below (paths
  // first), before the template leaves the loader; a build with a problem never does.
  const template: Template = {
    ...parsed.data,
    builds: parsed.data.builds.map((b) => b as Omit<typeof b, 'source'> & { source: typeof b.source } as BuildSpec),
  };
  const dir = path.dirname(abs);

  const names = new Map<string, number>();
  const outputDirs = new Map<string, number>();
  const memoryNotes: string[] = [];
  const places = protectedPlaces(
    dir,
    process.cwd(),
    os.homedir(),
    options.cacheDir ?? defaultCacheDir(),
    inputs.varFiles ?? [],
  );
  template.builds.forEach((b, i) => {
    const sameName = names.get(b.name);
    if (sameName !== undefined)
      problems.push({
        path: ['builds', i, 'name'],
        message: `build name "${b.name}" is used twice (also builds[${sameName}])`,
        fix: 'give each build its own name',
      });
    names.set(b.name, i);
    const s = b.source;
    const at = ['builds', i, 'source'];
    if ((s.base_image === undefined) === (s.iso === undefined)) {
      problems.push(
        s.iso
          ? {
              path: [...at, 'iso'],
              message: 'both "base_image" and "iso" are set',
              fix: 'keep "base_image" to build on a bootable disk image, or "iso" to install onto a blank disk, not both',
            }
          : {
              path: at,
              message: 'neither "base_image" nor "iso" is set',
              fix: 'add "base_image" (a bootable disk image) or "iso" (an installer, with disk_size and boot_command)',
            },
      );
    }
    const buildInputs = resolveBuildPaths(b, ['builds', i], dir, problems, options.mapPath);
    s.media = mediaOf(s);
    problems.push(...outputDirectoryProblems(b, ['builds', i], places, buildInputs));
    problems.push(
      ...qemuArgsProblems(s.qemu_args, [...at, 'qemu_args'], s.communicator.type === 'ssh' ? s.communicator.port : 22),
    );
    // Compared with this host's RAM: more fails at QEMU's start, more than is free is a warning.
    const fit = memoryFit(s.memory);
    if (fit.error) problems.push({ path: [...at, 'memory'], ...fit.error });
    if (fit.warning) memoryNotes.push(`${file}: builds[${i}].source.memory: ${fit.warning}`);
    // `enabled: false` says the same as `cloud_init: false`, and must be held to the same checks.
    if (s.cloud_init !== false && !s.cloud_init.enabled) s.cloud_init = false;
    if (s.iso !== undefined) {
      if (!s.disk_size)
        problems.push({
          path: [...at, 'disk_size'],
          message: 'an ISO install needs a blank disk of a given size',
          fix: 'add disk_size, e.g. disk_size: 10G',
        });
      // Installers have no cloud-init datasource to read: unless asked for, no seed and no injected host key.
      const rawCloudInit = (raw as { builds?: { source?: { cloud_init?: unknown } }[] }).builds?.[i]?.source
        ?.cloud_init;
      if (rawCloudInit === undefined) s.cloud_init = false;
    }
    // arch: aarch64 turns kiln's x86 defaults (machine pc, firmware bios) into virt and UEFI, and refuses what virt lacks.
    const rawSource = (raw as { builds?: { source?: Record<string, unknown> }[] }).builds?.[i]?.source ?? {};
    for (const p of applyArchDefaults(s, {
      firmware: rawSource.firmware !== undefined,
      machine: rawSource.machine !== undefined,
    }))
      problems.push({ path: [...at, p.field], message: p.message, fix: p.fix });
    // Keys are checked only by a firmware with Secure Boot on (a descriptor's features are read at launch).
    if (s.secure_boot && (s.firmware === 'bios' || s.firmware === 'uefi')) {
      problems.push({
        path: [...at, 'secure_boot'],
        message: `firmware: ${s.firmware} has Secure Boot off, so nothing would check these keys`,
        fix: 'set firmware: uefi-secure (or a descriptor with the secure-boot feature), or drop secure_boot',
      });
    }
    const smbiosClash =
      s.cloud_init !== false && s.cloud_init.delivery === 'http' ? smbiosType1Switch(s.qemu_args) : undefined; // unset: kiln picks the CD
    if (smbiosClash) {
      problems.push({
        path: [...at, 'qemu_args', s.qemu_args.findIndex((a) => a === smbiosClash)],
        message: `${smbiosClash.join(' ')} sets SMBIOS type 1 fields, where cloud_init delivery http gives the guest its seed URL in a type 1 table of kiln's, and QEMU takes one or the other`,
        fix: 'set cloud_init: { delivery: cdrom }, or drop that -smbios switch',
      });
    }
    if (s.communicator.type === 'none') {
      for (const message of withoutCommunicatorProblems(b.provisioners))
        problems.push({
          path: [...at, 'communicator'],
          message,
          fix: 'set communicator.type to ssh, or remove those provisioners',
        });
    }
    // An ISO install gets the build key through its answers file (${build.ssh_public_key}).
    if (
      s.cloud_init === false &&
      s.iso === undefined &&
      s.communicator.type === 'ssh' &&
      !s.communicator.private_key_file &&
      !s.communicator.password
    ) {
      problems.push({
        path: [...at, 'cloud_init'],
        message: 'without cloud-init kiln cannot give the guest its build key',
        fix: 'set communicator.private_key_file or communicator.password, or enable cloud_init',
      });
    }
    // Same name means same default directory: the name problem above already says so.
    if (outputDirs.has(b.output_directory) && sameName === undefined) {
      problems.push({
        path: ['builds', i, 'output_directory'],
        message: `builds[${outputDirs.get(b.output_directory)}] writes to the same output directory, ${b.output_directory}`,
        fix: 'give each build its own output_directory',
      });
    }
    outputDirs.set(b.output_directory, i);
    // Two outputs writing one file would overwrite each other: catch it before any disk is converted.
    const artifacts = new Map<string, number>();
    b.outputs.forEach((o, k) => {
      const target = path.join(o.directory ?? b.output_directory, artifactName(b.name, o));
      const first = artifacts.get(target);
      if (first !== undefined) {
        problems.push({
          path: ['builds', i, 'outputs', k],
          message: `writes ${artifactName(b.name, o)}, like outputs[${first}]`,
          fix: `give one of them another "name" (e.g. name: ${b.name}-${k}.${path.extname(artifactName(b.name, o)).slice(1) || o.format}), or remove the duplicate`,
        });
      }
      artifacts.set(target, k);
    });
    const produced = new Set(b.outputs.map((o) => o.format));
    b.post_processors.forEach((p, k) => {
      if (p.type !== 'compress') return;
      p.formats?.forEach((f, n) => {
        if (!produced.has(f))
          problems.push({
            path: ['builds', i, 'post_processors', k, 'formats', n],
            message: `no output of this build is ${f}, so there is nothing of that format to compress`,
            fix: `list formats the build writes (${[...produced].join(', ')}), or add an output with format: ${f}`,
          });
      });
    });
    // ${build.*} names that will exist at run time; anything else is a typo worth catching now.
    interpolateTree(
      b,
      {},
      (miss) => {
        if (miss.namespace !== 'build' || knownBuildValues.includes(miss.name)) return;
        const guess = closest(miss.name, knownBuildValues);
        problems.push({
          path: ['builds', i, ...miss.path],
          message: `unknown build value \${build.${miss.name}}`,
          fix: `${guess ? `did you mean \${build.${guess}}? ` : ''}kiln knows: ${knownBuildValues.join(', ')}`,
        });
      },
      'build',
    );
  });
  if (problems.length) throw new TemplateError(file, withLines(problems));

  return {
    file: abs,
    dir,
    template,
    variables,
    digest: createHash('sha256').update(text).digest('hex'),
    ...(memoryNotes.length ? { notes: memoryNotes } : {}),
  };
}

/**
 * Packer's Go-template strings ({{ .HTTPIP }}, {{user `x`}}, {{ build_name }}...). Values known while
 * loading are filled in; values known only while a build runs become kiln's ${build.*} references (and
 * {{ .Path }}/{{ .Vars }} of an execute_command kiln's {{path}}/{{vars}}). Anything else is an error
 * naming the function, because a literal "{{ ... }}" reaching a guest would fail much later.
 */
import { randomUUID } from 'node:crypto';

export interface GoTemplateContext {
  /** Legacy JSON only: user variables; in HCL the template language is HCL's, and only runtime values remain. */
  user?: Record<string, string>;
  env?: NodeJS.ProcessEnv;
  /** env is only allowed in variable defaults (Packer's rule). */
  allowEnv?: boolean;
  /** {{ build_name }}: the legacy builder's name, or the HCL source block's name (Packer's packer_build_name). */
  buildName?: string;
  /** {{ build_type }}: the builder (Packer's packer_builder_type). */
  buildType?: string;
  /** {{ .Name }}: Packer's QEMU builder gives the vm_name; without it, kiln's ${build.name}. */
  vmName?: string;
  /** {{ template_dir }}; undefined in HCL, where Packer has no template path either. */
  templateDir?: string;
  /** A {{user}} of a variable set nowhere renders "" (Packer, outside the variables section) and is reported here. */
  missingUser?: (name: string) => void;
  /** Escape kiln's own ${build.x} in the literal text and in values filled in (legacy JSON: the output goes to kiln's interpolation). */
  escapeKiln?: boolean;
  now: Date;
  /** In an execute_command: {{ .Path }} and {{ .Vars }} are kiln's {{path}} and {{vars}}. */
  executeCommand?: boolean;
}

export class GoTemplateError extends Error {
  constructor(
    readonly problem: string,
    readonly fix: string,
  ) {
    super(problem);
  }
}

const runtime: Record<string, string> = {
  HTTPIP: '${build.http_ip}',
  HTTPPort: '${build.http_port}',
  Name: '${build.name}',
  SSHPublicKey: '${build.ssh_public_key}',
  Host: '${build.ssh_host}',
  Port: '${build.ssh_port}',
  User: '${build.ssh_username}',
  OutputDir: '${build.output_dir}',
  SSHHostPort: '${build.ssh_port}',
};

/** Go's reference time layout (Mon Jan 2 15:04:05 MST 2006) as used by {{ isotime "..." }}. */
function goTime(layout: string, d: Date): string {
  const pad = (n: number, w = 2) => String(n).padStart(w, '0');
  const months = [
    'January',
    'February',
    'March',
    'April',
    'May',
    'June',
    'July',
    'August',
    'September',
    'October',
    'November',
    'December',
  ];
  const days = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday'];
  const parts: [string, () => string][] = [
    ['2006', () => String(d.getUTCFullYear())],
    ['January', () => months[d.getUTCMonth()]!],
    ['Jan', () => months[d.getUTCMonth()]!.slice(0, 3)],
    ['Monday', () => days[d.getUTCDay()]!],
    ['Mon', () => days[d.getUTCDay()]!.slice(0, 3)],
    ['MST', () => 'UTC'],
    ['01', () => pad(d.getUTCMonth() + 1)],
    ['02', () => pad(d.getUTCDate())],
    ['15', () => pad(d.getUTCHours())],
    ['03', () => pad(d.getUTCHours() % 12 || 12)],
    ['04', () => pad(d.getUTCMinutes())],
    ['05', () => pad(d.getUTCSeconds())],
    ['06', () => pad(d.getUTCFullYear() % 100)],
    ['Z07:00', () => 'Z'],
    ['-0700', () => '+0000'],
  ];
  let out = '';
  let i = 0;
  while (i < layout.length) {
    const hit = parts.find(([k]) => layout.startsWith(k, i));
    if (hit) {
      out += hit[1]();
      i += hit[0].length;
    } else {
      out += layout[i];
      i++;
    }
  }
  return out;
}

/** How deep (user (lower ...)) may nest: real templates use two or three levels; 50k would exhaust the stack. */
export const maxActionDepth = 64;
let actionDepth = 0;

/** One token of an action: a quoted string, a number, a (sub pipeline), a name, or the pipe. */
type Token = { kind: 'string' | 'number' | 'paren' | 'name' | 'pipe'; text: string };

function tokens(body: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  while (i < body.length) {
    const c = body[i]!;
    if (/\s/.test(c)) {
      i++;
      continue;
    }
    if (c === '|') {
      out.push({ kind: 'pipe', text: '|' });
      i++;
      continue;
    }
    if (c === '`') {
      const end = body.indexOf('`', i + 1);
      if (end < 0) throw new GoTemplateError(`a \`string is never closed in {{${body}}}`, 'close it with a backquote');
      out.push({ kind: 'string', text: body.slice(i + 1, end) });
      i = end + 1;
      continue;
    }
    if (c === '"') {
      let j = i + 1;
      while (j < body.length && body[j] !== '"') j += body[j] === '\\' ? 2 : 1;
      if (j >= body.length)
        throw new GoTemplateError(`a "string" is never closed in {{${body}}}`, 'close it with a double quote');
      let text: string;
      try {
        text = JSON.parse(body.slice(i, j + 1)) as string;
      } catch {
        throw new GoTemplateError(`cannot read the string ${body.slice(i, j + 1)}`, 'check its backslash escapes');
      }
      out.push({ kind: 'string', text });
      i = j + 1;
      continue;
    }
    if (c === '(') {
      // The matching parenthesis, skipping strings; the inside is read (and its depth limited) by action().
      let depth = 0;
      let j = i;
      for (; j < body.length; j++) {
        const d = body[j]!;
        if (d === '`') {
          const e = body.indexOf('`', j + 1);
          if (e < 0) break;
          j = e;
          continue;
        }
        if (d === '"') {
          j++;
          while (j < body.length && body[j] !== '"') j += body[j] === '\\' ? 2 : 1;
          continue;
        }
        if (d === '(') depth++;
        else if (d === ')' && --depth === 0) break;
      }
      if (j >= body.length) throw new GoTemplateError(`a "(" is never closed in {{${body}}}`, 'close it with ")"');
      out.push({ kind: 'paren', text: body.slice(i + 1, j) });
      i = j + 1;
      continue;
    }
    const m = /^(-?\d+|[A-Za-z_.][A-Za-z0-9_.]*)/.exec(body.slice(i));
    if (!m)
      throw new GoTemplateError(
        `cannot read the template action {{${body}}}`,
        'write e.g. {{ .HTTPIP }} or {{user `name`}}',
      );
    out.push({ kind: /^-?\d/.test(m[1]!) ? 'number' : 'name', text: m[1]! });
    i += m[1]!.length;
  }
  return out;
}

function action(body: string, ctx: GoTemplateContext): string {
  if (actionDepth >= maxActionDepth)
    throw new GoTemplateError(
      `template actions nest more than ${maxActionDepth} levels deep (parentheses inside parentheses)`,
      'flatten it: give the inner value a variable of its own',
    );
  actionDepth++;
  try {
    return pipeline(body, ctx);
  } finally {
    actionDepth--;
  }
}

/** A pipeline: {{ user `x` | replace "." "-" -1 | lower }}, each stage taking the previous value as its last argument (Go's rule). */
function pipeline(body: string, ctx: GoTemplateContext): string {
  const stages: Token[][] = [[]];
  for (const t of tokens(body)) {
    if (t.kind === 'pipe') stages.push([]);
    else stages[stages.length - 1]!.push(t);
  }
  if (stages.some((s) => !s.length))
    throw new GoTemplateError(
      `cannot read the template action {{${body}}}`,
      'write e.g. {{ .HTTPIP }} or {{user `name`}}',
    );
  let previous: string | undefined;
  for (const stage of stages) previous = command(stage, previous, ctx);
  return previous!;
}

const known =
  'user, env (in variables), build_name, build_type, timestamp, isotime, uuid, template_dir, pwd, packer_version, lower, upper, split, replace, replace_all, and .HTTPIP, .HTTPPort, .Name, .SSHPublicKey';

function command(stage: Token[], piped: string | undefined, ctx: GoTemplateContext): string {
  const [head, ...rest] = stage as [Token, ...Token[]];
  const value = (t: Token): string =>
    t.kind === 'paren' ? action(t.text, ctx) : t.kind === 'name' ? command([t], undefined, ctx) : t.text;
  if (head.kind !== 'name') {
    if (rest.length || piped !== undefined)
      throw new GoTemplateError(
        `a value cannot be called: ${head.text}`,
        'put the function name first, e.g. {{ lower `X` }}',
      );
    return value(head);
  }
  const fn = head.text;
  if (fn.startsWith('.')) {
    const name = fn.slice(1);
    if (rest.length || piped !== undefined)
      throw new GoTemplateError(`{{ .${name} }} takes no arguments`, `write {{ .${name} }}`);
    if (ctx.executeCommand && name === 'Path') return '{{path}}';
    if (ctx.executeCommand && name === 'Vars') return '{{vars}}';
    // Packer's QEMU builder gives .Name as the vm_name (boot_command, qemuargs).
    if (name === 'Name' && ctx.vmName !== undefined) return ctx.vmName;
    if (Object.hasOwn(runtime, name)) return runtime[name]!;
    throw new GoTemplateError(
      `kiln does not know the template value {{ .${name} }}`,
      `kiln knows ${Object.keys(runtime)
        .map((k) => `.${k}`)
        .join(', ')}${ctx.executeCommand ? ', .Path, .Vars' : ''}`,
    );
  }
  const args = [...rest.map(value), ...(piped === undefined ? [] : [piped])];
  const want = (n: number, form: string): string[] => {
    if (args.length !== n)
      throw new GoTemplateError(
        `{{ ${fn} }} takes ${n === 0 ? 'no arguments' : `${n} argument${n === 1 ? '' : 's'}`} (${form}), got ${args.length}`,
        `write {{ ${form} }}`,
      );
    return args;
  };
  const int = (s: string, what: string): number => {
    if (!/^-?\d+$/.test(s.trim()))
      throw new GoTemplateError(
        `{{ ${fn} }}: ${what} must be a whole number, not ${JSON.stringify(s)}`,
        `write e.g. {{ ${fn === 'split' ? 'split (user `x`) "," 0' : 'replace "a" "b" -1 (user `x`)'} }}`,
      );
    return Number(s);
  };
  switch (fn) {
    case 'user': {
      const [name] = want(1, 'user `name`') as [string];
      if (!ctx.user) throw new GoTemplateError('{{ user }} belongs to legacy JSON templates', 'write var.NAME in HCL');
      if (Object.hasOwn(ctx.user, name)) return ctx.escapeKiln ? escapeKiln(ctx.user[name]!) : ctx.user[name]!;
      // Packer: outside the variables section a variable set nowhere is the empty string.
      if (ctx.missingUser) {
        ctx.missingUser(name);
        return '';
      }
      throw new GoTemplateError(
        `{{user \`${name}\`}}: there is no variable "${name}"`,
        `declare "${name}" under "variables", or fix the name`,
      );
    }
    case 'env': {
      const [name] = want(1, 'env `NAME`') as [string];
      if (!ctx.allowEnv)
        throw new GoTemplateError(
          "{{ env }} can only be used in a variable's value (as in Packer)",
          'give a variable "{{env `NAME`}}" as its value and use {{user `that variable`}} here',
        );
      const v = (ctx.env ?? process.env)[name] ?? '';
      return ctx.escapeKiln ? escapeKiln(v) : v;
    }
    case 'build_name':
      want(0, 'build_name');
      return ctx.buildName ?? '${build.name}';
    case 'build_type':
      want(0, 'build_type');
      return ctx.buildType ?? 'qemu';
    case 'timestamp':
      want(0, 'timestamp');
      return String(Math.floor(ctx.now.getTime() / 1000));
    case 'isotime':
      if (args.length > 1) want(1, 'isotime "2006-01-02"');
      return args.length ? goTime(args[0]!, ctx.now) : ctx.now.toISOString().replace(/\.\d{3}Z$/, 'Z');
    case 'uuid':
      want(0, 'uuid');
      return randomUUID();
    case 'template_dir':
      want(0, 'template_dir');
      if (ctx.templateDir === undefined)
        throw new GoTemplateError(
          '{{ template_dir }} is not available in an HCL template (Packer fails too: "template path not available")',
          'write ${path.root} instead',
        );
      return ctx.templateDir;
    case 'pwd':
      want(0, 'pwd');
      return process.cwd();
    case 'packer_version':
      want(0, 'packer_version');
      return '1.6.6';
    case 'lower':
      return want(1, 'lower `X`')[0]!.toLowerCase();
    case 'upper':
      return want(1, 'upper `x`')[0]!.toUpperCase();
    case 'split': {
      const [s, sep, i] = want(3, 'split (user `x`) "," 0') as [string, string, string];
      return s.split(sep)[int(i, 'the index')] ?? '';
    }
    case 'replace': {
      // Go's strings.Replace(src, old, new, n) with Packer 1.6.6's argument order: old new n src.
      const [from, to, n, src] = want(4, 'replace "old" "new" -1 (user `x`)') as [string, string, string, string];
      const count = int(n, 'the count');
      return goReplace(src, from, to, count);
    }
    case 'replace_all': {
      const [from, to, src] = want(3, 'replace_all "old" "new" (user `x`)') as [string, string, string];
      return goReplace(src, from, to, -1);
    }
    default:
      throw new GoTemplateError(`kiln does not know the template function "${fn}"`, `kiln knows ${known}`);
  }
}

/** Go's strings.Replace: n < 0 replaces every match, an empty `from` matches before each character (and at the end). */
function goReplace(src: string, from: string, to: string, n: number): string {
  if (n === 0 || from === to) return src;
  if (from === '') {
    const chars = [...src];
    const max = n < 0 ? chars.length + 1 : Math.min(n, chars.length + 1);
    return chars.map((c, k) => (k < max ? to : '') + c).join('') + (max > chars.length ? to : '');
  }
  const parts = src.split(from);
  if (n < 0 || n >= parts.length - 1) return parts.join(to);
  return parts.slice(0, n + 1).join(to) + from + parts.slice(n + 1).join(from);
}

/**
 * kiln's own ${build.x} in a legacy template's literal text or a variable's value, kept literal for kiln's
 * interpolation (`$${build.x}`): Packer has no such syntax, so it is text there. (A literal ${var.x} is
 * escaped in every Packer template's mapped tree by escapeKilnVars, as no mapped value refers to kiln's var.)
 */
export function escapeKiln(text: string): string {
  return text.replace(/\$(?=\{\s*build\.[A-Za-z_])/g, '$$$$');
}

/** Every ${var.x} in a mapped Packer template is text (HCL's `$${var.x}`, a file() read, legacy JSON): escaped for kiln's pass. */
export function escapeKilnVars<T>(tree: T): T {
  if (typeof tree === 'string') return tree.replace(/\$(?=\{\s*var\.[A-Za-z_])/g, '$$$$') as T;
  if (Array.isArray(tree)) return tree.map(escapeKilnVars) as T;
  if (tree && typeof tree === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(tree))
      Object.defineProperty(out, k, { value: escapeKilnVars(v), enumerable: true, writable: true, configurable: true });
    return out as T;
  }
  return tree;
}

/**
 * What Packer's placeholders in an HCL template's strings render to for one build: {{ build_name }} is the
 * source block's name, {{ build_type }} its builder, {{ .Name }} the vm_name (default packer-<source name>);
 * {{ template_dir }} fails, as in Packer. The rest ({{ .HTTPIP }}...) become kiln's ${build.*}.
 */
export function hclBuildContext(b: {
  fullName: string;
  source: { type: string; name: string; buildName?: string; fields: Map<string, { value: unknown }> };
}): Partial<GoTemplateContext> {
  const buildName = b.source.buildName ?? b.source.name;
  const vm = b.source.fields.get('vm_name')?.value;
  let vmName: string | undefined = `packer-${buildName}`;
  if (typeof vm === 'string') {
    try {
      vmName = renderGoTemplate(vm, { now: new Date(), buildName, buildType: b.source.type });
    } catch {
      vmName = undefined;
    }
  }
  return { buildName, buildType: b.source.type, ...(vmName !== undefined && !vmName.includes('${') ? { vmName } : {}) };
}

/** Renders every {{ ... }} action of a string. */
export function renderGoTemplate(text: string, ctx: GoTemplateContext): string {
  if (!text.includes('{{')) return ctx.escapeKiln ? escapeKiln(text) : text;
  const lit = (x: string) => (ctx.escapeKiln ? escapeKiln(x) : x);
  let out = '';
  let i = 0;
  for (;;) {
    const start = text.indexOf('{{', i);
    if (start < 0) {
      out += lit(text.slice(i));
      return out;
    }
    const end = text.indexOf('}}', start + 2);
    if (end < 0)
      throw new GoTemplateError(
        '"{{" is never closed with "}}"',
        'close the action, or write {{ "{{" }} for literal braces',
      );
    out += lit(text.slice(i, start));
    let body = text.slice(start + 2, end);
    // {{- and -}} trim markers.
    body = body.replace(/^-\s/, '').replace(/\s-$/, '');
    if (/^\s*"\{\{"\s*$/.test(body)) out += '{{';
    else out += action(body, ctx);
    i = end + 2;
  }
}

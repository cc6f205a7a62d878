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
  buildName?: string;
  templateDir?: string;
  now: Date;
  /** In an execute_command: {{ .Path }} and {{ .Vars }} are kiln's {{path}} and {{vars}}. */
  executeCommand?: boolean;
}

export class GoTemplateError extends Error {
  constructor(readonly problem: string, readonly fix: string) { super(problem); }
}

const runtime: Record<string, string> = {
  HTTPIP: '${build.http_ip}', HTTPPort: '${build.http_port}', Name: '${build.name}',
  SSHPublicKey: '${build.ssh_public_key}', Host: '${build.ssh_host}', Port: '${build.ssh_port}', User: '${build.ssh_username}',
  OutputDir: '${build.output_dir}', SSHHostPort: '${build.ssh_port}',
};

/** Go's reference time layout (Mon Jan 2 15:04:05 MST 2006) as used by {{ isotime "..." }}. */
function goTime(layout: string, d: Date): string {
  const pad = (n: number, w = 2) => String(n).padStart(w, '0');
  const months = ['January', 'February', 'March', 'April', 'May', 'June', 'July', 'August', 'September', 'October', 'November', 'December'];
  const days = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday'];
  const parts: [string, () => string][] = [
    ['2006', () => String(d.getUTCFullYear())], ['January', () => months[d.getUTCMonth()]!], ['Jan', () => months[d.getUTCMonth()]!.slice(0, 3)],
    ['Monday', () => days[d.getUTCDay()]!], ['Mon', () => days[d.getUTCDay()]!.slice(0, 3)], ['MST', () => 'UTC'],
    ['01', () => pad(d.getUTCMonth() + 1)], ['02', () => pad(d.getUTCDate())], ['15', () => pad(d.getUTCHours())],
    ['03', () => pad(d.getUTCHours() % 12 || 12)], ['04', () => pad(d.getUTCMinutes())], ['05', () => pad(d.getUTCSeconds())],
    ['06', () => pad(d.getUTCFullYear() % 100)], ['Z07:00', () => 'Z'], ['-0700', () => '+0000'],
  ];
  let out = '';
  let i = 0;
  while (i < layout.length) {
    const hit = parts.find(([k]) => layout.startsWith(k, i));
    if (hit) { out += hit[1](); i += hit[0].length; } else { out += layout[i]; i++; }
  }
  return out;
}

/** One argument: `x`, "x" or (user `x`). */
function argument(text: string, ctx: GoTemplateContext): string | undefined {
  const t = text.trim();
  const q = /^(`([^`]*)`|"((?:[^"\\]|\\.)*)")$/.exec(t);
  if (q) {
    if (q[2] !== undefined) return q[2];
    try { return JSON.parse(`"${q[3]}"`) as string; } catch { throw new GoTemplateError(`cannot read the string ${t}`, 'check its backslash escapes'); }
  }
  const inner = /^\((.*)\)$/.exec(t);
  if (inner) return action(inner[1]!, ctx);
  return undefined;
}

/** How deep (user (lower ...)) may nest: real templates use two or three levels; 50k would exhaust the stack. */
export const maxActionDepth = 64;
let actionDepth = 0;

function action(body: string, ctx: GoTemplateContext): string {
  if (actionDepth >= maxActionDepth) throw new GoTemplateError(`template actions nest more than ${maxActionDepth} levels deep (parentheses inside parentheses)`, 'flatten it: give the inner value a variable of its own');
  actionDepth++;
  try { return actionAt(body, ctx); } finally { actionDepth--; }
}

function actionAt(body: string, ctx: GoTemplateContext): string {
  const text = body.trim();
  // A pipeline: {{ user `x` | lower }}.
  if (text.includes('|')) {
    const [first, ...rest] = text.split('|');
    let v = action(first!, ctx);
    for (const fn of rest.map((s) => s.trim())) {
      if (fn === 'lower') v = v.toLowerCase();
      else if (fn === 'upper') v = v.toUpperCase();
      else throw new GoTemplateError(`kiln does not know the template function "${fn}" in a pipeline`, 'use lower or upper, or write the value out');
    }
    return v;
  }
  const m = /^([A-Za-z_.][A-Za-z0-9_]*)\s*(.*)$/s.exec(text);
  if (!m) throw new GoTemplateError(`cannot read the template action {{${body}}}`, 'write e.g. {{ .HTTPIP }} or {{user `name`}}');
  const [, fn, rest] = m as unknown as [string, string, string];
  if (fn.startsWith('.')) {
    const name = fn.slice(1);
    if (ctx.executeCommand && name === 'Path') return '{{path}}';
    if (ctx.executeCommand && name === 'Vars') return '{{vars}}';
    if (Object.hasOwn(runtime, name)) return runtime[name]!;
    throw new GoTemplateError(`kiln does not know the template value {{ .${name} }}`, `kiln knows ${Object.keys(runtime).map((k) => `.${k}`).join(', ')}${ctx.executeCommand ? ', .Path, .Vars' : ''}`);
  }
  const arg = () => {
    const a = argument(rest, ctx);
    if (a === undefined) throw new GoTemplateError(`{{ ${fn} }} needs one quoted argument, e.g. {{ ${fn} \`name\` }}`, `write {{ ${fn} \`name\` }}`);
    return a;
  };
  switch (fn) {
    case 'user': {
      const name = arg();
      if (!ctx.user) throw new GoTemplateError('{{ user }} belongs to legacy JSON templates', 'write var.NAME in HCL');
      if (!Object.hasOwn(ctx.user, name)) throw new GoTemplateError(`{{user \`${name}\`}}: there is no variable "${name}"`, `declare "${name}" under "variables", or fix the name`);
      return ctx.user[name]!;
    }
    case 'env': {
      if (!ctx.allowEnv) throw new GoTemplateError('{{ env }} can only be used in a variable\'s default (as in Packer)', 'give a variable "{{env `NAME`}}" as its value and use {{user `that variable`}} here');
      return (ctx.env ?? process.env)[arg()] ?? '';
    }
    case 'build_name': return ctx.buildName ?? '${build.name}';
    case 'build_type': return 'qemu';
    case 'timestamp': return String(Math.floor(ctx.now.getTime() / 1000));
    case 'isotime': return rest.trim() ? goTime(arg(), ctx.now) : ctx.now.toISOString().replace(/\.\d{3}Z$/, 'Z');
    case 'uuid': return randomUUID();
    case 'template_dir': return ctx.templateDir ?? '.';
    case 'pwd': return process.cwd();
    case 'packer_version': return '1.6.6';
    case 'lower': return arg().toLowerCase();
    case 'upper': return arg().toUpperCase();
    case 'split': {
      const m2 = /^(.*)\s+(`[^`]*`|"[^"]*")\s+(\d+)$/s.exec(rest.trim());
      if (!m2) throw new GoTemplateError('{{ split }} takes a string, a separator and an index', 'write {{ split (user `x`) "," 0 }}');
      return (argument(m2[1]!, ctx) ?? '').split(argument(m2[2]!, ctx)!)[Number(m2[3])] ?? '';
    }
    default:
      throw new GoTemplateError(`kiln does not know the template function "${fn}"`, 'kiln knows user, env (in variables), build_name, build_type, timestamp, isotime, uuid, template_dir, pwd, packer_version, lower, upper, split, and .HTTPIP, .HTTPPort, .Name, .SSHPublicKey');
  }
}

/** Renders every {{ ... }} action of a string. */
export function renderGoTemplate(text: string, ctx: GoTemplateContext): string {
  if (!text.includes('{{')) return text;
  let out = '';
  let i = 0;
  for (;;) {
    const start = text.indexOf('{{', i);
    if (start < 0) { out += text.slice(i); return out; }
    const end = text.indexOf('}}', start + 2);
    if (end < 0) throw new GoTemplateError('"{{" is never closed with "}}"', 'close the action, or write {{ "{{" }} for literal braces');
    out += text.slice(i, start);
    let body = text.slice(start + 2, end);
    // {{- and -}} trim markers.
    body = body.replace(/^-\s/, '').replace(/\s-$/, '');
    if (/^\s*"\{\{"\s*$/.test(body)) out += '{{';
    else out += action(body, ctx);
    i = end + 2;
  }
}

/**
 * The boot-command language, compatible with Packer's: literal text, <special> keys, modifiers
 * (<leftAltOn> ... <leftAltOff>), <wait>, <wait5>, <wait1m30s>; and beyond Packer, <waitFor "text">
 * and <waitFor /regex/ 2m>, which wait for output on the serial console instead of guessing.
 * Parsed once into an AST (at `kiln validate`); typing drivers only execute it. `${...}` template
 * references stay inside text nodes and are filled in when the build runs.
 */
import { closest } from '../template/errors.js';
import { parseDuration } from '../util/units.js';
import { keyDisplayNames, modifierKeys, specialKeys } from './keys.js';

export type BootNode =
  | { kind: 'text'; text: string; pos: number }
  | { kind: 'key'; key: string; action: 'press' | 'down' | 'up'; pos: number }
  | { kind: 'wait'; ms: number; pos: number }
  | { kind: 'waitFor'; pattern: string | RegExp; timeoutMs: number; pos: number };

export class BootCommandError extends Error {
  constructor(
    readonly source: string,
    readonly pos: number,
    readonly problem: string,
    readonly expected: string,
  ) {
    super(`${problem} at column ${pos + 1}: expected ${expected}\n  ${source}\n  ${' '.repeat(pos)}^`);
  }
}

/** Default timeout of <waitFor ...> when none is given. */
export const defaultWaitForMs = 5 * 60_000;

/** `<` + a name: anything else starting with `<` is ordinary text (e.g. a shell redirect). */
const tagStart = /^<([A-Za-z][A-Za-z0-9]*)/;

/** A whole <wait...> tag, whatever follows "wait" up to ">" (so <wait-5s> and <wait1.5s> are seen whole). */
const waitTag = /^<wait(?!for)([^<>\s]*)>/i;

/** Longer than any boot needs, and far below what a timer can hold (setTimeout fires at once past ~24.8 days). */
export const maxWaitMs = 24 * 3_600_000;

const waitUnits: Record<string, number> = { ns: 1e-6, us: 1e-3, µs: 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/**
 * A wait's duration as Packer's boot-command grammar writes it: nothing (1 s), whole seconds (<wait5>),
 * or Go durations (<wait1m30s>, <wait1.5s>, <wait500ms>). Packer also parses a negative one (<wait-5s>),
 * which waits not at all: kiln refuses it, like anything else that is not a duration or is over 24 h.
 */
export function waitDuration(arg: string): number | { problem: string; expected: string } {
  const expected = 'a duration such as <wait5>, <wait10s>, <wait1m30s> or <wait500ms>';
  if (arg === '') return 1000;
  if (arg.startsWith('-'))
    return { problem: `a negative wait ("${arg}")`, expected: `a duration of zero or more: ${expected}` };
  let ms: number;
  if (/^\d+$/.test(arg)) ms = Number(arg) * 1000;
  else if (/^(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+$/.test(arg)) {
    ms = 0;
    for (const m of arg.matchAll(/(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/g)) ms += Number(m[1]) * waitUnits[m[2]!]!;
  } else return { problem: `"${arg}" is not a duration`, expected };
  if (!(ms <= maxWaitMs))
    return {
      problem: `the wait "${arg}" is longer than 24h`,
      expected: `a wait of at most 24h (<wait24h>); for something slow, <waitFor "text" 2h> waits only as long as needed`,
    };
  return Math.round(ms);
}

export function parseBootCommand(source: string): BootNode[] {
  const nodes: BootNode[] = [];
  let text = '';
  let textPos = 0;
  const flush = () => {
    if (text) nodes.push({ kind: 'text', text, pos: textPos });
    text = '';
  };
  let i = 0;
  while (i < source.length) {
    const rest = source.slice(i);
    if (rest.startsWith('${')) {
      // A template reference is text; keep it whole so a '>' inside cannot end anything.
      const end = source.indexOf('}', i);
      if (end < 0) throw new BootCommandError(source, i, 'unterminated ${...} reference', '"}"');
      if (!text) textPos = i;
      text += source.slice(i, end + 1);
      i = end + 1;
      continue;
    }
    const wait = waitTag.exec(rest);
    if (wait) {
      flush();
      const ms = waitDuration(wait[1]!);
      if (typeof ms !== 'number') throw new BootCommandError(source, i + 5, ms.problem, ms.expected);
      nodes.push({ kind: 'wait', ms, pos: i });
      i += wait[0].length;
      continue;
    }
    const tag = tagStart.exec(rest);
    if (!tag) {
      if (!text) textPos = i;
      text += source[i];
      i++;
      continue;
    }
    const name = tag[1]!;
    const lower = name.toLowerCase();
    const afterName = i + tag[0].length;
    if (lower === 'waitfor') {
      flush();
      const r = parseWaitFor(source, i, afterName);
      nodes.push(r.node);
      i = r.end;
      continue;
    }
    if (source[afterName] !== '>') {
      // "<wait5" at the end of the line, or "<enter<tab>": a tag that lost its '>', which would
      // otherwise be typed as text into the installer. "<a b" or "<foo=1" is just text (a typed '<').
      const next = source[afterName];
      const unclosed = next === undefined || next === '<' || (lower.startsWith('wait') && /\s/.test(next));
      const meant = unclosed ? tagNode(name, i) : undefined;
      if (meant && !('problem' in meant)) {
        throw new BootCommandError(source, afterName, `unclosed <${name}`, `">" to close it: <${name}>`);
      }
      if (!text) textPos = i;
      text += source[i];
      i++;
      continue;
    }
    flush();
    const end = afterName + 1;
    const node = tagNode(name, i);
    if (node === undefined) {
      const candidates = [
        ...keyDisplayNames,
        ...keyDisplayNames
          .filter((k) => /^(left|right)(Alt|Ctrl|Shift|Super)$/.test(k))
          .flatMap((k) => [`${k}On`, `${k}Off`]),
        'wait',
        'waitFor',
      ];
      const guess = closest(name, candidates);
      throw new BootCommandError(
        source,
        i,
        `unknown key <${name}>`,
        guess ? `a known key; did you mean <${guess}>?` : 'a key such as <enter>, <esc>, <f2>, <leftCtrlOn> or <wait5>',
      );
    }
    if ('problem' in node) throw new BootCommandError(source, node.pos, node.problem, node.expected);
    nodes.push(node);
    i = end;
  }
  flush();
  return nodes;
}

/**
 * The node a tag name stands for (`wait5`, `enter`, `leftCtrlOn`...), an error for a wait with a bad
 * duration, or undefined when the name is no tag at all.
 */
function tagNode(name: string, pos: number): BootNode | { problem: string; expected: string; pos: number } | undefined {
  const lower = name.toLowerCase();
  if (lower.startsWith('wait')) {
    const ms = waitDuration(name.slice(4));
    return typeof ms === 'number' ? { kind: 'wait', ms, pos } : { pos: pos + 5, ...ms };
  }
  if (Object.hasOwn(specialKeys, lower)) return { kind: 'key', key: lower, action: 'press', pos };
  if (Object.hasOwn(modifierKeys, lower)) return { kind: 'key', key: lower, action: 'press', pos };
  const mod = /^(.*?)(on|off)$/.exec(lower);
  if (mod && Object.hasOwn(modifierKeys, mod[1]!))
    return { kind: 'key', key: mod[1]!, action: mod[2] === 'on' ? 'down' : 'up', pos };
  return undefined;
}

function parseWaitFor(source: string, start: number, from: number): { node: BootNode; end: number } {
  let i = from;
  const skipSpaces = () => {
    while (source[i] === ' ') i++;
  };
  skipSpaces();
  if (i === from)
    throw new BootCommandError(source, i, 'missing pattern after <waitFor', 'a space, then "text" or /regex/');
  let pattern: string | RegExp;
  const quote = source[i];
  if (quote === '"' || quote === "'") {
    let j = i + 1;
    let value = '';
    while (j < source.length && source[j] !== quote) {
      if (source[j] === '\\' && j + 1 < source.length) {
        value += source[j + 1];
        j += 2;
        continue;
      }
      value += source[j];
      j++;
    }
    if (j >= source.length)
      throw new BootCommandError(source, i, 'unterminated string in <waitFor', `a closing ${quote}`);
    if (!value) throw new BootCommandError(source, i, 'empty text in <waitFor', 'some text to wait for');
    pattern = value;
    i = j + 1;
  } else if (quote === '/') {
    let j = i + 1;
    while (j < source.length && source[j] !== '/') j += source[j] === '\\' ? 2 : 1;
    if (j >= source.length) throw new BootCommandError(source, i, 'unterminated regex in <waitFor', 'a closing /');
    const flags = /^[imsu]*/.exec(source.slice(j + 1))![0];
    try {
      pattern = new RegExp(source.slice(i + 1, j), flags);
    } catch (e) {
      throw new BootCommandError(
        source,
        i,
        `bad regex: ${(e as Error).message}`,
        'a valid JavaScript regular expression',
      );
    }
    i = j + 1 + flags.length;
  } else {
    throw new BootCommandError(source, i, 'bad <waitFor> pattern', '"text" or /regex/');
  }
  skipSpaces();
  let timeoutMs = defaultWaitForMs;
  const m = /^([0-9][0-9a-z.]*)/.exec(source.slice(i));
  if (m) {
    try {
      timeoutMs = parseDuration(m[1]!);
    } catch {
      throw new BootCommandError(source, i, `"${m[1]}" is not a duration`, 'a timeout such as 30s, 2m or 1m30s');
    }
    if (timeoutMs > maxWaitMs)
      throw new BootCommandError(source, i, `the timeout "${m[1]}" is longer than 24h`, 'a timeout of at most 24h');
    i += m[1]!.length;
    skipSpaces();
  }
  if (source[i] !== '>') throw new BootCommandError(source, i, 'unterminated <waitFor ...>', '">"');
  return { node: { kind: 'waitFor', pattern, timeoutMs, pos: start }, end: i + 1 };
}

/** A boot_command is a list of strings run one after another: parse each, report with its index. */
export function parseBootCommands(lines: string[]): BootNode[][] {
  return lines.map((l) => parseBootCommand(l));
}

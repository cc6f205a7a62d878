import { describe, expect, it } from 'vitest';
import { BootCommandError, parseBootCommand, defaultWaitForMs } from '../../../src/bootcommand/parse.js';
import { keyForChar, specialKeys } from '../../../src/bootcommand/keys.js';

describe('parseBootCommand', () => {
  it('parses text, keys, waits and modifiers into an AST', () => {
    expect(parseBootCommand('<esc><wait>auto url=x<enter><wait5><wait1m30s><leftCtrlOn>c<leftCtrlOff><F10>')).toEqual([
      { kind: 'key', key: 'esc', action: 'press', pos: 0 },
      { kind: 'wait', ms: 1000, pos: 5 },
      { kind: 'text', text: 'auto url=x', pos: 11 },
      { kind: 'key', key: 'enter', action: 'press', pos: 21 },
      { kind: 'wait', ms: 5000, pos: 28 },
      { kind: 'wait', ms: 90_000, pos: 35 },
      { kind: 'key', key: 'leftctrl', action: 'down', pos: 46 },
      { kind: 'text', text: 'c', pos: 58 },
      { kind: 'key', key: 'leftctrl', action: 'up', pos: 59 },
      { kind: 'key', key: 'f10', action: 'press', pos: 72 },
    ]);
  });
  it('accepts every Packer special key, case-insensitively', () => {
    for (const k of [
      'enter',
      'return',
      'esc',
      'tab',
      'bs',
      'del',
      'spacebar',
      'insert',
      'home',
      'end',
      'pageUp',
      'pageDown',
      'up',
      'down',
      'left',
      'right',
      'f1',
      'f12',
      'leftAlt',
      'rightShift',
      'leftSuper',
    ]) {
      const [node] = parseBootCommand(`<${k}>`);
      expect(node?.kind, k).toBe('key');
    }
    expect(parseBootCommand('<ENTER>')[0]).toMatchObject({ kind: 'key', key: 'enter' });
  });
  it('keeps template references and stray < inside text', () => {
    expect(parseBootCommand('url=http://${build.http_ip}:${build.http_port}/x <enter>')).toEqual([
      { kind: 'text', text: 'url=http://${build.http_ip}:${build.http_port}/x ', pos: 0 },
      { kind: 'key', key: 'enter', action: 'press', pos: 49 },
    ]);
    expect(parseBootCommand('echo a < b <c d')).toEqual([{ kind: 'text', text: 'echo a < b <c d', pos: 0 }]);
  });
  it("reads waits as Packer's grammar writes them: seconds, Go durations with fractions and ns/us", () => {
    expect(
      parseBootCommand('<wait1.5s><wait500ms><wait1m30s><wait0><wait24h><WAIT2><wait1500us>').map((n) =>
        n.kind === 'wait' ? n.ms : n,
      ),
    ).toEqual([1500, 500, 90_000, 0, 86_400_000, 2000, 2]);
  });

  it('parses waitFor with text, regex and timeout', () => {
    expect(parseBootCommand('<waitFor "boot: ">')).toEqual([
      { kind: 'waitFor', pattern: 'boot: ', timeoutMs: defaultWaitForMs, pos: 0 },
    ]);
    const [n] = parseBootCommand('<waitFor /login:\\s*$/m 2m>');
    expect(n).toMatchObject({ kind: 'waitFor', timeoutMs: 120_000 });
    expect((n as { pattern: RegExp }).pattern.source).toBe('login:\\s*$');
    expect((n as { pattern: RegExp }).pattern.flags).toBe('m');
    expect(parseBootCommand(`<waitFor 'say "hi"' 30s>`)[0]).toMatchObject({ pattern: 'say "hi"', timeoutMs: 30_000 });
  });
  it.each([
    ['<entr>', 0, /unknown key <entr> at column 1: expected a known key; did you mean <enter>\?/],
    ['ab<pageup2>', 2, /unknown key <pageup2>/],
    ['<waitx>', 5, /"x" is not a duration at column 6/],
    // Issue 23: a negative wait was typed as text; other malformed waits are refused alike, with the position.
    ['<wait-5s>', 5, /a negative wait \("-5s"\) at column 6: expected a duration of zero or more/],
    ['ok<wait-1>', 7, /a negative wait \("-1"\) at column 8/],
    ['<wait5x>', 5, /"5x" is not a duration at column 6/],
    ['<waitabc>', 5, /"abc" is not a duration at column 6/],
    ['<wait1.5.2s>', 5, /"1\.5\.2s" is not a duration/],
    ['<wait99999999999>', 5, /the wait "99999999999" is longer than 24h at column 6: expected a wait of at most 24h/],
    ['<wait25h>', 5, /the wait "25h" is longer than 24h/],
    ['<waitFor "x" 9999h>', 13, /the timeout "9999h" is longer than 24h at column 14/],
    ['<waitFor "boot:>', 9, /unterminated string in <waitFor at column 10: expected a closing "/],
    ['<waitFor /a(/>', 9, /bad regex/],
    ['<waitFor boot>', 9, /bad <waitFor> pattern at column 10: expected "text" or \/regex\//],
    ['<waitFor "x" soon>', 13, /unterminated <waitFor \.\.\.> at column 14: expected ">"/],
    ['x ${build.http_ip', 2, /unterminated \$\{\.\.\.\} reference/],
  ])('reports %j at the right position', (src, pos, pattern) => {
    try {
      parseBootCommand(src);
      throw new Error('expected an error');
    } catch (e) {
      expect(e).toBeInstanceOf(BootCommandError);
      expect((e as BootCommandError).pos).toBe(pos);
      expect((e as Error).message).toMatch(pattern);
      expect((e as Error).message).toContain(`\n  ${src}\n  ${' '.repeat(pos)}^`);
    }
  });
});

describe('US keyboard mapping', () => {
  // The reference: each printable ASCII character, the key that types it, and whether shift is held.
  const table: Record<string, [string, boolean]> = {
    ' ': ['spc', false],
    '!': ['1', true],
    '"': ['apostrophe', true],
    '#': ['3', true],
    $: ['4', true],
    '%': ['5', true],
    '&': ['7', true],
    "'": ['apostrophe', false],
    '(': ['9', true],
    ')': ['0', true],
    '*': ['8', true],
    '+': ['equal', true],
    ',': ['comma', false],
    '-': ['minus', false],
    '.': ['dot', false],
    '/': ['slash', false],
    ':': ['semicolon', true],
    ';': ['semicolon', false],
    '<': ['comma', true],
    '=': ['equal', false],
    '>': ['dot', true],
    '?': ['slash', true],
    '@': ['2', true],
    '[': ['bracket_left', false],
    '\\': ['backslash', false],
    ']': ['bracket_right', false],
    '^': ['6', true],
    _: ['minus', true],
    '`': ['grave_accent', false],
    '{': ['bracket_left', true],
    '|': ['backslash', true],
    '}': ['bracket_right', true],
    '~': ['grave_accent', true],
  };
  for (let c = 0x20; c <= 0x7e; c++) {
    const ch = String.fromCharCode(c);
    let want: [string, boolean];
    if (/[a-z0-9]/.test(ch)) want = [ch, false];
    else if (/[A-Z]/.test(ch)) want = [ch.toLowerCase(), true];
    else want = table[ch]!;
    it(`types ${JSON.stringify(ch)} as ${want[1] ? 'shift+' : ''}${want[0]}`, () => {
      expect(keyForChar(ch)).toEqual({ qcode: want[0], shift: want[1] });
    });
  }
  it('has no key for control characters other than newline and tab', () => {
    expect(keyForChar('\x07')).toBeUndefined();
    expect(keyForChar('\n')).toEqual({ qcode: 'ret', shift: false });
  });
  it('maps special keys to QEMU qcodes', () => {
    expect(specialKeys.enter).toBe('ret');
    expect(specialKeys.pageup).toBe('pgup');
    expect(specialKeys.bs).toBe('backspace');
  });
});

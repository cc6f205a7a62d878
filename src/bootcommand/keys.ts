/**
 * Key names: Packer's special-key vocabulary mapped to QEMU qcodes, and every printable ASCII character
 * mapped to the key and shift state that types it on a US keyboard layout.
 */

/** Special keys usable as <name>, with the QEMU qcode each presses. Case-insensitive. */
export const specialKeys: Record<string, string> = {
  enter: 'ret',
  return: 'ret',
  esc: 'esc',
  tab: 'tab',
  bs: 'backspace',
  del: 'delete',
  spacebar: 'spc',
  insert: 'insert',
  home: 'home',
  end: 'end',
  pageup: 'pgup',
  pagedown: 'pgdn',
  up: 'up',
  down: 'down',
  left: 'left',
  right: 'right',
  menu: 'menu',
  f1: 'f1',
  f2: 'f2',
  f3: 'f3',
  f4: 'f4',
  f5: 'f5',
  f6: 'f6',
  f7: 'f7',
  f8: 'f8',
  f9: 'f9',
  f10: 'f10',
  f11: 'f11',
  f12: 'f12',
};

/** Modifiers, usable as <leftAlt> (press) or <leftAltOn>/<leftAltOff> (hold/release). */
export const modifierKeys: Record<string, string> = {
  leftalt: 'alt',
  rightalt: 'alt_r',
  leftctrl: 'ctrl',
  rightctrl: 'ctrl_r',
  leftshift: 'shift',
  rightshift: 'shift_r',
  leftsuper: 'meta_l',
  rightsuper: 'meta_r',
};

/** The canonical spelling of each key name, for messages and "did you mean". */
export const keyDisplayNames = [
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
  'menu',
  ...Array.from({ length: 12 }, (_, i) => `f${i + 1}`),
  'leftAlt',
  'rightAlt',
  'leftCtrl',
  'rightCtrl',
  'leftShift',
  'rightShift',
  'leftSuper',
  'rightSuper',
];

const unshifted: Record<string, string> = {
  ' ': 'spc',
  '-': 'minus',
  '=': 'equal',
  '[': 'bracket_left',
  ']': 'bracket_right',
  '\\': 'backslash',
  ';': 'semicolon',
  "'": 'apostrophe',
  '`': 'grave_accent',
  ',': 'comma',
  '.': 'dot',
  '/': 'slash',
};
const shifted: Record<string, string> = {
  '!': '1',
  '@': '2',
  '#': '3',
  $: '4',
  '%': '5',
  '^': '6',
  '&': '7',
  '*': '8',
  '(': '9',
  ')': '0',
  _: 'minus',
  '+': 'equal',
  '{': 'bracket_left',
  '}': 'bracket_right',
  '|': 'backslash',
  ':': 'semicolon',
  '"': 'apostrophe',
  '~': 'grave_accent',
  '<': 'comma',
  '>': 'dot',
  '?': 'slash',
};

export interface KeyStroke {
  qcode: string;
  shift: boolean;
}

/** How to type one character on a US layout, or undefined for characters no key produces. */
export function keyForChar(ch: string): KeyStroke | undefined {
  if (/^[a-z0-9]$/.test(ch)) return { qcode: ch, shift: false };
  if (/^[A-Z]$/.test(ch)) return { qcode: ch.toLowerCase(), shift: true };
  if (ch === '\n' || ch === '\r') return { qcode: 'ret', shift: false };
  if (ch === '\t') return { qcode: 'tab', shift: false };
  if (unshifted[ch]) return { qcode: unshifted[ch]!, shift: false };
  if (shifted[ch]) return { qcode: shifted[ch]!, shift: true };
  return undefined;
}

/** What a special key sends on a serial console (a VT100/xterm terminal), by lower-case name. */
export const serialSequences: Record<string, string> = {
  enter: '\r',
  return: '\r',
  esc: '\x1b',
  tab: '\t',
  bs: '\x7f',
  del: '\x1b[3~',
  spacebar: ' ',
  insert: '\x1b[2~',
  home: '\x1b[H',
  end: '\x1b[F',
  pageup: '\x1b[5~',
  pagedown: '\x1b[6~',
  up: '\x1b[A',
  down: '\x1b[B',
  right: '\x1b[C',
  left: '\x1b[D',
  menu: '',
  f1: '\x1bOP',
  f2: '\x1bOQ',
  f3: '\x1bOR',
  f4: '\x1bOS',
  f5: '\x1b[15~',
  f6: '\x1b[17~',
  f7: '\x1b[18~',
  f8: '\x1b[19~',
  f9: '\x1b[20~',
  f10: '\x1b[21~',
  f11: '\x1b[23~',
  f12: '\x1b[24~',
};

/**
 * The parameters of every HCL function kiln runs, as Packer's function docs (and the cty/Terraform
 * functions Packer takes them from) give them: names, types, optional ones and a variadic tail. A call
 * is checked against them before it runs, so `join(",")` fails as Packer's does, naming the
 * parameters, instead of reaching the function with an argument missing ("a undefined").
 */
import type { Value } from './eval.js';

type ParamType = 'string' | 'number' | 'bool' | 'list' | 'map' | 'any';

interface Signature {
  /** "name:type" of each parameter, in order. */
  params: string[];
  /** How many of the last params may be left out (lookup's default, range's limit and step). */
  optional?: number;
  /** A variadic tail after params ("lists:list"): any number more of that type. */
  rest?: string;
}

const sig = (params: string[], more: Omit<Signature, 'params'> = {}): Signature => ({ params, ...more });
const str1 = sig(['string:string']);

export const signatures: Record<string, Signature> = {
  // strings
  join: sig(['separator:string', 'list:list'], { rest: 'lists:list' }),
  split: sig(['separator:string', 'string:string']),
  format: sig(['format:string'], { rest: 'args:any' }),
  formatlist: sig(['format:string'], { rest: 'args:any' }),
  lower: str1,
  upper: str1,
  title: str1,
  trimspace: str1,
  chomp: str1,
  strrev: str1,
  replace: sig(['string:string', 'substring:string', 'replacement:string']),
  regex_replace: sig(['string:string', 'substring:string', 'replacement:string']),
  trim: sig(['string:string', 'characters:string']),
  trimprefix: sig(['string:string', 'prefix:string']),
  trimsuffix: sig(['string:string', 'suffix:string']),
  substr: sig(['string:string', 'offset:number', 'length:number']),
  startswith: sig(['string:string', 'prefix:string']),
  endswith: sig(['string:string', 'suffix:string']),
  strcontains: sig(['string:string', 'substr:string']),
  indent: sig(['spaces:number', 'string:string']),
  // collections
  concat: sig(['list:list'], { rest: 'lists:list' }),
  flatten: sig(['list:list']),
  length: sig(['value:any']),
  element: sig(['list:list', 'index:number']),
  index: sig(['list:list', 'value:any']),
  contains: sig(['list:list', 'value:any']),
  distinct: sig(['list:list']),
  compact: sig(['list:list']),
  reverse: sig(['list:list']),
  sort: sig(['list:list']),
  slice: sig(['list:list', 'start_index:number', 'end_index:number']),
  range: sig(['start:number', 'limit:number', 'step:number'], { optional: 2 }),
  keys: sig(['map:map']),
  values: sig(['map:map']),
  // The default is optional in Terraform and Packer 1.6 ("for historical reasons").
  lookup: sig(['map:map', 'key:string', 'default:any'], { optional: 1 }),
  merge: sig([], { rest: 'maps:map' }),
  zipmap: sig(['keys:list', 'values:list']),
  coalesce: sig(['value:any'], { rest: 'values:any' }),
  coalescelist: sig(['list:list'], { rest: 'lists:list' }),
  min: sig(['number:number'], { rest: 'numbers:number' }),
  max: sig(['number:number'], { rest: 'numbers:number' }),
  abs: sig(['number:number']),
  ceil: sig(['number:number']),
  floor: sig(['number:number']),
  parseint: sig(['number:string', 'base:number']),
  // conversions
  tostring: sig(['value:any']),
  tonumber: sig(['value:any']),
  tobool: sig(['value:any']),
  tolist: sig(['value:any']),
  toset: sig(['value:any']),
  tomap: sig(['value:any']),
  jsonencode: sig(['value:any']),
  jsondecode: str1,
  base64encode: str1,
  base64decode: str1,
  urlencode: str1,
  // hashes and ids
  sha256: str1,
  sha512: str1,
  sha1: str1,
  md5: str1,
  uuidv4: sig([]),
  // time
  timestamp: sig([]),
  formatdate: sig(['format:string', 'time:string']),
  timeadd: sig(['timestamp:string', 'duration:string']),
  legacy_isotime: sig(['format:string']),
  // files and paths
  abspath: sig(['path:string']),
  basename: sig(['path:string']),
  dirname: sig(['path:string']),
  pathexpand: sig(['path:string']),
  fileexists: sig(['path:string']),
  file: sig(['path:string']),
  filebase64: sig(['path:string']),
  templatefile: sig(['path:string', 'vars:map']),
  env: sig(['name:string']),
  // can() and try() take expressions, not values; checked by count only.
  can: sig(['expression:any']),
  try: sig(['expression:any'], { rest: 'expressions:any' }),
};

const plural = (n: number) => `${n} argument${n === 1 ? '' : 's'}`;
const names = (s: Signature) =>
  [...s.params.map((p) => p.split(':')[0]!), ...(s.rest ? [`${s.rest.split(':')[0]}...`] : [])].join(', ');

/** "join() takes 2 arguments (separator, list), got 1", or undefined when the count fits. */
export function arityProblem(name: string, count: number): string | undefined {
  const s = signatures[name];
  if (!s) return undefined;
  const max = s.rest ? Infinity : s.params.length;
  const min = s.params.length - (s.optional ?? 0);
  if (count >= min && count <= max) return undefined;
  const takes = min === max ? plural(min) : max === Infinity ? `at least ${plural(min)}` : `${min} to ${plural(max)}`;
  return `${name}() takes ${takes} (${names(s)}), got ${count}`;
}

function fits(type: ParamType, v: Value): boolean {
  if (v === null || type === 'any') return true; // null: each function says what it does with it
  switch (type) {
    // HCL converts numbers and bools to strings, and numeric or true/false strings back.
    case 'string':
      return typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean';
    case 'number':
      return typeof v === 'number' || (typeof v === 'string' && v.trim() !== '' && Number.isFinite(Number(v)));
    case 'bool':
      return typeof v === 'boolean' || v === 'true' || v === 'false';
    case 'list':
      return Array.isArray(v);
    case 'map':
      return typeof v === 'object' && !Array.isArray(v);
  }
}

const article = (t: string) =>
  t === 'list' || t === 'map' || t === 'string' || t === 'number'
    ? `a ${t}`
    : t === 'bool' || t === 'boolean'
      ? 'true or false'
      : t;

/** The first argument of the wrong type, as [its index, the problem], or undefined. */
export function typeProblem(name: string, args: Value[], kindOf: (v: Value) => string): [number, string] | undefined {
  const s = signatures[name];
  if (!s) return undefined;
  for (let i = 0; i < args.length; i++) {
    const param = s.params[i] ?? s.rest;
    if (!param) return undefined;
    const [pname, type] = param.split(':') as [string, ParamType];
    if (!fits(type, args[i]!))
      return [i, `${name}(): argument ${i + 1} (${pname}) must be ${article(type)}, not ${article(kindOf(args[i]!))}`];
  }
  return undefined;
}

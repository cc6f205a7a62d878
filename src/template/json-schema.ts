/**
 * The template's JSON Schema, derived from the zod schema (and so from the field registry's types and
 * doc lines): `kiln schema` prints it, and a YAML editor given it (`# yaml-language-server: $schema=`)
 * completes keys and shows each field's doc on hover. It describes the template as written (input
 * types, defaults as a user writes them). Checks that need more than one value or the file system
 * (paths exist, base_image xor iso, output directories) are kiln's alone: `kiln validate` runs them.
 */
import { z } from 'zod';
import { templateSchema } from './schema.js';

/** A whole-value reference, which the loader replaces by the variable's typed value before checking it. */
export const variableReference = '^\\$\\{\\s*var\\.[A-Za-z_][A-Za-z0-9_]*\\s*\\}$';

type JsonSchema = Record<string, unknown>;
const isScalarSchema = (s: JsonSchema) =>
  ['number', 'integer', 'boolean'].includes(s.type as string) ||
  (s.type === 'string' && ('enum' in s || 'const' in s || 'pattern' in s)) ||
  ('const' in s && s.type === undefined);

/** A scalar field given as ${var.NAME} is a string in the file: let it through wherever a number, bool or enum goes. */
function allowVariables(node: unknown, key?: string): unknown {
  if (Array.isArray(node)) return node.map((n) => allowVariables(n));
  if (!node || typeof node !== 'object') return node;
  const s = Object.fromEntries(
    Object.entries(node as JsonSchema).map(([k, v]) => [
      k,
      k === 'properties' && v && typeof v === 'object'
        ? Object.fromEntries(Object.entries(v).map(([p, sub]) => [p, allowVariables(sub, p)]))
        : allowVariables(v),
    ]),
  ) as JsonSchema;
  // A discriminator (a provisioner's `type`) stays as it is, so editors still pick the member by it.
  if (key === 'type' || !isScalarSchema(s)) return s;
  const { description, default: dflt, ...rest } = s;
  return {
    ...(description !== undefined ? { description } : {}),
    ...(dflt !== undefined ? { default: dflt } : {}),
    anyOf: [rest, { type: 'string', pattern: variableReference }],
  };
}

let cached: JsonSchema | undefined;

export function templateJsonSchema(): JsonSchema {
  cached ??= {
    ...(allowVariables(
      z.toJSONSchema(templateSchema, { io: 'input', unrepresentable: 'any', target: 'draft-2020-12' }),
    ) as JsonSchema),
    $id: 'https://kiln.invalid/template.schema.json',
    title: 'kiln template',
    description:
      'A kiln build template (YAML or JSON). `kiln validate` checks what a schema cannot: paths, cross-field rules.',
  };
  return cached;
}

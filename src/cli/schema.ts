/**
 * `kiln schema`: the template's JSON Schema (for editors: `# yaml-language-server: $schema=<file>`),
 * or with --markdown the template reference (docs/template-reference.md is this output). Both are
 * generated from the field registry on demand, so the installed kiln always prints its own.
 */
import { templateJsonSchema } from '../template/json-schema.js';
import { templateReference } from '../template/reference.js';

export function schemaText(markdown: boolean): string {
  return markdown ? templateReference() : `${JSON.stringify(templateJsonSchema(), null, 2)}\n`;
}

/**
 * The official SPDX 2.3 and CycloneDX 1.5 JSON schemas (vendored in test/fixtures/schemas), compiled
 * with ajv, and an SPDX licence-expression check: shared by the unit and e2e tests of kiln's SBOMs.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv, type ErrorObject } from 'ajv';
import addFormatsModule from 'ajv-formats';
import parseSpdxExpression from 'spdx-expression-parse';

const schemas = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../fixtures/schemas');
const load = (name: string) => JSON.parse(readFileSync(path.join(schemas, name), 'utf8')) as object;
// ajv-formats is CommonJS: its default export is the function under ESM interop.
const addFormats = ((addFormatsModule as unknown as { default?: unknown }).default ?? addFormatsModule) as (
  ajv: Ajv,
) => Ajv;

const ajv = new Ajv({ strict: false, allErrors: true });
addFormats(ajv);
// CycloneDX uses JSON Schema's IRI and IDN formats, which ajv-formats does not define: checked as non-blank text.
for (const format of ['iri-reference', 'iri', 'idn-email']) ajv.addFormat(format, /^\S+$/);
ajv.addSchema(load('spdx.schema.json'));
ajv.addSchema(load('jsf-0.82.schema.json'));
const spdx = ajv.compile(load('spdx-2.3.schema.json'));
const cyclonedx = ajv.compile(load('bom-1.5.schema.json'));

const describe = (errors: ErrorObject[] | null | undefined) =>
  (errors ?? []).slice(0, 10).map((e) => `${e.instancePath || '/'} ${e.message} ${JSON.stringify(e.params)}`);

/** The schema's complaints about `doc` ([] when valid). */
export function spdxSchemaErrors(doc: unknown): string[] {
  return spdx(doc) ? [] : describe(spdx.errors);
}
export function cycloneDxSchemaErrors(doc: unknown): string[] {
  return cyclonedx(doc) ? [] : describe(cyclonedx.errors);
}

/** Every licence expression in an SPDX document that spdx-expression-parse rejects, and LicenseRefs it uses but does not define. */
export function spdxLicenceProblems(doc: {
  packages?: { name: string; licenseDeclared?: string }[];
  hasExtractedLicensingInfos?: { licenseId: string }[];
}): string[] {
  const defined = new Set((doc.hasExtractedLicensingInfos ?? []).map((l) => l.licenseId));
  const problems: string[] = [];
  for (const p of doc.packages ?? []) {
    const e = p.licenseDeclared;
    if (!e || e === 'NOASSERTION' || e === 'NONE') continue;
    try {
      parseSpdxExpression(e);
    } catch (err) {
      problems.push(`${p.name}: ${e}: ${(err as Error).message}`);
      continue;
    }
    for (const ref of e.match(/LicenseRef-[A-Za-z0-9.-]+/g) ?? [])
      if (!defined.has(ref)) problems.push(`${p.name}: ${ref} is not in hasExtractedLicensingInfos`);
  }
  return problems;
}

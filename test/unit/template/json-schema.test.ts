// kiln schema's JSON Schema: every example validates against it, and the bad-template corpus is
// rejected by it wherever the mistake is one a schema can see (the rest are listed, with why).
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { templateJsonSchema } from '../../../src/template/json-schema.js';
import { schemaText } from '../../../src/cli/schema.js';

const repoRoot = path.resolve(import.meta.dirname, '../../..');
const ajv = new Ajv2020({ allErrors: true, strict: false });
const validate = ajv.compile(templateJsonSchema());
const read = (file: string): unknown => YAML.parse(readFileSync(file, 'utf8'));

/**
 * Corpus files the schema accepts: kiln rejects them for what only its loader can know (the file
 * system, values compared across fields, the grammar inside a string, variables), or before any schema
 * applies (the file does not parse).
 */
const semantic: Record<string, string> = {
  'base-image-missing.yaml': 'a path that does not exist',
  'iso-missing.yaml': 'a path that does not exist',
  'script-missing.yaml': 'a path that does not exist',
  'file-source-missing.yaml': 'a path that does not exist',
  'checksum-file-missing.yaml': 'a path that does not exist',
  'var-file-missing.yaml': 'a --var-file that does not exist',
  'var-undefined.yaml': 'a ${var.*} reference to no variable',
  'var-no-value.yaml': 'a variable with no value given',
  'var-undeclared-flag.yaml': 'a --var of no declared variable',
  'var-default-loop.yaml': 'variables referring to each other',
  'build-value-unknown.yaml': 'an unknown ${build.*} name inside a string',
  'boot-unclosed-wait.yaml': 'the boot command grammar inside a string',
  'boot-unknown-key.yaml': 'the boot command grammar inside a string',
  'boot-key-typo.yaml': 'the boot command grammar inside a string',
  'boot-bad-regex.yaml': 'the boot command grammar inside a string',
  'boot-unclosed-waitfor.yaml': 'the boot command grammar inside a string',
  'iso-and-base-image.yaml': 'base_image and iso both set (one of two fields)',
  'no-image.yaml': 'neither base_image nor iso set (one of two fields)',
  'iso-without-disk-size.yaml': 'disk_size required only with iso',
  'inline-and-script.yaml': 'exactly one of three fields',
  'file-source-and-content.yaml': 'exactly one of two fields',
  'duplicate-build-names.yaml': 'values compared across builds',
  'output-directory-shared.yaml': 'values compared across builds',
  'output-twice.yaml': 'values compared across outputs',
  'subformat-not-vmdk.yaml': 'a field allowed only with a given format',
  'include-not-vagrant.yaml': 'a field allowed only with a given format',
  'vagrant-include-clash.yaml': 'base names compared with each other and the box',
  'vagrant-include-missing.yaml': 'where a file is on the file system',
  'vagrant-include-case.yaml': 'base names compared with each other and the box',
  'vagrant-include-url.yaml': 'a pattern checked in code',
  'cloud-init-false-no-key.yaml': 'cloud_init off needs a key or password',
  'cloud-init-enabled-false-no-key.yaml': 'cloud_init off needs a key or password',
  'communicator-none-with-shell.yaml': 'provisioners that need a communicator',
  'output-directory-dot.yaml': 'where a directory is on the file system',
  'output-directory-parent.yaml': 'where a directory is on the file system',
  'output-directory-holds-input.yaml': 'where a directory is on the file system',
  'output-directory-cache.yaml': 'where a directory is on the file system',
  'outputs-directory-holds-input.yaml': 'where a directory is on the file system',
  'qemu-args-qmp-tcp.yaml': 'what a QEMU switch does',
  'qemu-args-nographic.yaml': 'what a QEMU switch does',
  'qemu-args-netdev-net0.yaml': 'what a QEMU switch does',
  'qemu-args-equals.yaml': 'what a QEMU switch does',
  'compress-format-not-produced.yaml': 'values compared across outputs and post-processors',
  'file-destination-relative.yaml': 'absolute only for an upload',
  'memory-word.yaml': 'a size inside a string',
  'disk-size-word.yaml': 'a size inside a string',
  'build-name-spaces.yaml': 'a pattern checked in code',
  'checksum-md5.yaml': 'a pattern checked in code',
  'firmware-typo.yaml': 'any *.json path is also allowed',
  'cd-content-dotdot.yaml': 'a pattern checked in code',
  'env-key-bad.yaml': 'a pattern checked in code',
  'output-name-dotdot.yaml': 'a pattern checked in code',
  'var-default-wrong-type.yaml': 'a default compared with its declared type',
};
/** Files that are not YAML or JSON at all: no schema is reached. */
const syntax = new Set([
  'yaml-bad-indentation.yaml',
  'yaml-tab.yaml',
  'yaml-unclosed-quote.yaml',
  'yaml-duplicate-key.yaml',
  'json-syntax.json',
]);

describe('kiln schema', () => {
  const examples = readdirSync(path.join(repoRoot, 'examples')).filter((f) => /\.ya?ml$/.test(f));
  it.each(examples)('accepts examples/%s', (file) => {
    const ok = validate(read(path.join(repoRoot, 'examples', file)));
    expect(ok ? [] : validate.errors).toEqual([]);
  });

  const corpusDir = path.join(repoRoot, 'test/fixtures/bad-templates');
  const corpus = readdirSync(corpusDir).filter((f) => /\.(ya?ml|json)$/.test(f) && !syntax.has(f));
  it.each(corpus)('test/fixtures/bad-templates/%s: rejected by the schema where kiln rejects it', (file) => {
    const accepted = validate(read(path.join(corpusDir, file)));
    if (semantic[file]) expect(accepted, `listed as beyond a schema (${semantic[file]})`).toBe(true);
    else expect(accepted, 'kiln rejects it, so the schema must').toBe(false);
  });

  it('kiln schema prints it as JSON, and --markdown the reference', () => {
    expect(JSON.parse(schemaText(false))).toEqual(templateJsonSchema());
    expect(schemaText(true)).toMatch(/^# Template reference\n/);
  });

  it('gives editors the doc line and the default of a field', () => {
    const source = (
      templateJsonSchema() as {
        properties: {
          builds: {
            items: {
              properties: { source: { properties: Record<string, { description?: string; default?: unknown }> } };
            };
          };
        };
      }
    ).properties.builds.items.properties.source.properties;
    expect(source.disk_size?.description).toMatch(/disk's size/);
    expect(source.shutdown_timeout?.default).toBe('5m');
    expect(source.memory?.default).toBe(1024);
  });
});

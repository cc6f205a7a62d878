// docs/template-reference.md is generated from the field registry: this fails when it is stale.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { templateReference } from '../../../src/template/reference.js';

const repoRoot = path.resolve(import.meta.dirname, '../../..');

describe('docs/template-reference.md', () => {
  it('is what `kiln schema --markdown` prints now', () => {
    const committed = readFileSync(path.join(repoRoot, 'docs/template-reference.md'), 'utf8');
    // On failure: npx tsc -p tsconfig.json && node bin/kiln.js schema --markdown > docs/template-reference.md
    expect(
      committed,
      'docs/template-reference.md is stale: regenerate it with `node bin/kiln.js schema --markdown > docs/template-reference.md`',
    ).toBe(templateReference());
  });

  it('lists every source field with its cache role and a Packer name where one renames it', () => {
    const ref = templateReference();
    expect(ref).toMatch(/^\| `memory` \| integer \\\| string \| `1024` \| runtime \| `memory` \| Guest RAM/m);
    expect(ref).toMatch(/^\| `machine` \| string \| `"pc"` \| disk \| `machine_type` \|/m);
    expect(ref).toMatch(/^### Provisioner `shell`$/m);
    expect(ref).toMatch(/^### Target `s3`$/m);
  });
});

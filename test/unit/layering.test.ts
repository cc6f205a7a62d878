// The layering rules (.dependency-cruiser.cjs, run on src/ by `make lint-layers`) bite: run on a small
// tree with one import of each forbidden kind, they report exactly those, and let the allowed ones be.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-layering-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function tree(files: Record<string, string>): void {
  writeFileSync(
    path.join(dir, 'tsconfig.json'),
    JSON.stringify({ compilerOptions: { module: 'NodeNext', moduleResolution: 'NodeNext', strict: true } }),
  );
  for (const [file, text] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(dir, file)), { recursive: true });
    writeFileSync(path.join(dir, file), text);
  }
}

interface Violation {
  from: string;
  to: string;
  rule: { name: string };
}

async function cruise(): Promise<string[]> {
  const r = await execa(
    'node',
    [
      path.join(repoRoot, 'node_modules/dependency-cruiser/bin/dependency-cruise.mjs'),
      'src',
      '--config',
      path.join(repoRoot, '.dependency-cruiser.cjs'),
      '--output-type',
      'json',
    ],
    { cwd: dir, reject: false },
  );
  const result = JSON.parse(r.stdout) as { summary: { violations: Violation[] } };
  return result.summary.violations.map((v) => `${v.rule.name}: ${v.from} -> ${v.to}`).sort();
}

describe('layering rules', () => {
  it('report up-imports (type-only ones too), step-to-step imports, kiln imports in util/, a folder outside the layers and run-time cycles; allow the rest', async () => {
    tree({
      'src/cli/main.ts': "import { build } from '../index.js';\nexport const main = build;\n",
      'src/index.ts': "export { build } from './build/build.js';\n",
      'src/build/build.ts': "import { steps } from './steps/index.js';\nexport const build = steps;\n",
      'src/build/state.ts': 'export interface State { n: number }\n',
      'src/build/steps/index.ts':
        "import { a } from './a.js';\nimport { b } from './b.js';\nexport const steps = [a, b];\n",
      'src/build/steps/a.ts': "import type { State } from '../state.js';\nexport const a = (s: State) => s.n;\n",
      // forbidden: a step importing another step
      'src/build/steps/b.ts': "import { a } from './a.js';\nexport const b = a;\n",
      // forbidden: a type-only import from a lower layer (provisioners) into build
      'src/provisioners/shell.ts':
        "import type { State } from '../build/state.js';\nexport const shell = (s: State) => s;\n",
      // forbidden: cache below provisioners
      'src/cache/keys.ts': "import { shell } from '../provisioners/shell.js';\nexport const keys = shell;\n",
      // allowed: base siblings, and a cycle through a type-only import
      'src/template/schema.ts':
        "import type { Cm } from './cm.js';\nimport { units } from '../ui/units.js';\nexport interface Schema { cm?: Cm }\nexport const u = units;\n",
      'src/template/cm.ts': "import type { Schema } from './schema.js';\nexport interface Cm { s?: Schema }\n",
      // forbidden: util importing kiln code
      'src/util/pid.ts': "import { units } from '../ui/units.js';\nexport const pid = units;\n",
      'src/ui/units.ts': 'export const units = 1;\n',
      // forbidden: a folder with no place in the layers
      'src/stray/x.ts': "import { units } from '../ui/units.js';\nexport const x = units;\n",
      // forbidden: a run-time cycle
      'src/http/x.ts': "import { y } from './y.js';\nexport const x = () => y;\n",
      'src/http/y.ts': "import { x } from './x.js';\nexport const y = () => x;\n",
    });
    const found = await cruise();
    // A cycle is reported once, at whichever of its edges the walk meets first.
    expect(found.filter((v) => v.startsWith('no-circular:'))).toEqual([
      expect.stringMatching(/^no-circular: src\/http\/[xy]\.ts -> src\/http\/[xy]\.ts$/),
    ]);
    expect(found.filter((v) => !v.startsWith('no-circular:'))).toEqual([
      'cache-imports-down: src/cache/keys.ts -> src/provisioners/shell.ts',
      'every-module-in-a-layer: src/stray/x.ts -> src/ui/units.ts',
      'no-step-imports-a-step: src/build/steps/b.ts -> src/build/steps/a.ts',
      'provisioners-imports-down: src/provisioners/shell.ts -> src/build/state.ts',
      'util-imports-nothing-of-kiln: src/util/pid.ts -> src/ui/units.ts',
    ]);
  }, 60_000);
});

// The installer ISO fixture exists. What it does (stop at a boot prompt, take a command line typed on
// the serial console or the keyboard, fetch its answers over HTTP, install, power off, and leave a disk
// that boots on its own) is proved through kiln by build-iso.test.ts, which drives the same ISO both
// ways and boots the result; a separate install here, without kiln, proved nothing new and cost two
// installs of suite time. The boot prompt, typed line and installer log are in the serial console
// tail of any failure there, which tells a broken fixture from a kiln fault.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { imagesDir } from '../helpers/guest.js';

const iso = path.join(imagesDir, 'installer.iso');

describe('installer ISO fixture', () => {
  it('exists (built by make fixtures)', () =>
    expect(existsSync(iso), `${iso} is missing: run make fixtures`).toBe(true));
});

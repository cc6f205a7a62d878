/**
 * Step: extra install media from files: a CD (cd_files/cd_content, labelled cd_label, e.g. OEMDRV for
 * a kickstart) and a FAT floppy (floppy_files), made with xorriso and mtools as Packer users expect.
 */
import { cpSync, existsSync, lstatSync, mkdirSync, readlinkSync, realpathSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import type { Step } from '../step.js';
import { interpolateString } from '../../template/interpolate.js';
import { KilnError } from '../../util/errors.js';

async function tool(cmd: string, args: string[], what: string): Promise<void> {
  const r = await execa(cmd, args, { reject: false, all: true });
  if (r.failed)
    throw new Error(
      `${what} failed: ${String(r.all ?? r.message).trim()}\n  (is ${cmd} installed? make setup installs it)`,
    );
}

const inside = (root: string, p: string) => p.startsWith(root + path.sep);

/**
 * Where cd_content `name` goes in the CD tree `dir`. The loader refuses names that climb out; this
 * refuses them again where the file is written, together with a path through a symlink that cd_files
 * copied into the tree, so nothing is ever written outside it.
 */
function cdContentPath(dir: string, name: string): string {
  const refuse = (why: string) =>
    new KilnError(`cd_content "${name}" ${why}, outside the CD`, {
      fix: `write it relative to the CD's root, e.g. ks.cfg or kickstart/ks.cfg`,
    });
  const dst = path.resolve(dir, name);
  if (path.isAbsolute(name) || !inside(dir, dst)) throw refuse(`names ${dst}`);
  let existing = path.dirname(dst);
  while (!existsSync(existing)) existing = path.dirname(existing);
  const realDir = realpathSync(dir);
  const real = realpathSync(existing);
  if (real !== realDir && !inside(realDir, real)) throw refuse(`leads through a symlink to ${real}`);
  if (lstatSync(dst, { throwIfNoEntry: false })?.isSymbolicLink()) throw refuse(`is a symlink to ${readlinkSync(dst)}`);
  return dst;
}

export const installMediaStep: Step = {
  name: 'make install media',
  enabled: (ctx) => {
    const s = ctx.build.source;
    return s.cd_files.length > 0 || Object.keys(s.cd_content).length > 0 || s.floppy_files.length > 0;
  },
  async run(ctx) {
    const s = ctx.build.source;
    const work = ctx.state.workDir;
    if (s.cd_files.length || Object.keys(s.cd_content).length) {
      const dir = path.join(work, 'cd');
      mkdirSync(dir, { recursive: true });
      for (const f of s.cd_files) cpSync(f, path.join(dir, path.basename(f)), { recursive: true });
      for (const [name, body] of Object.entries(s.cd_content)) {
        const dst = cdContentPath(dir, name);
        mkdirSync(path.dirname(dst), { recursive: true });
        writeFileSync(dst, String(interpolateString(body, { build: ctx.buildValues() })));
      }
      const iso = path.join(work, 'cd_files.iso');
      await tool(
        'xorriso',
        ['-as', 'mkisofs', '-quiet', '-V', s.cd_label, '-J', '-R', '-o', iso, dir],
        'making the cd_files ISO',
      );
      ctx.state.cdFilesIso = iso;
    }
    if (s.floppy_files.length) {
      const img = path.join(work, 'floppy.img');
      await tool('mkfs.vfat', ['-C', '-n', s.floppy_label, img, '1440'], 'making the floppy');
      for (const f of s.floppy_files) await tool('mcopy', ['-s', '-i', img, f, '::/'], `copying ${f} to the floppy`);
      ctx.state.floppyImage = img;
    }
  },
};

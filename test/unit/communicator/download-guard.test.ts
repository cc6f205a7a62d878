// What a guest's download may do to the host (src/communicator/download-guard.ts, tar-io.ts's
// extractTo): modes lose setuid/setgid/sticky and world-write and follow the host's umask; a folder's
// archive is bounded in bytes and entries, refused at the entry that crosses the limit, before any of
// it is written.
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tarStream from 'tar-stream';
import { afterAll, describe, expect, it } from 'vitest';
import {
  DownloadBudget,
  DownloadLimitError,
  hostMode,
  templateSize,
  unlimited,
} from '../../../src/communicator/download-guard.js';
import { applyFolderModes, extractTo, settleInto } from '../../../src/communicator/tar-io.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'download-guard-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

type Entry = { name: string; type?: 'file' | 'directory'; mode: number; data?: string | Buffer };
async function archive(entries: Entry[]): Promise<Buffer> {
  const pack = tarStream.pack();
  for (const e of entries) pack.entry({ name: e.name, type: e.type ?? 'file', mode: e.mode }, e.data ?? '');
  pack.finalize();
  return Buffer.concat(await Readable.from(pack).toArray());
}
async function extract(name: string, tar: Buffer, limits = unlimited, umask = 0o022): Promise<string> {
  const root = path.join(dir, name);
  mkdirSync(root);
  const { output, folderModes } = extractTo(root, () => undefined, limits, umask);
  await pipeline(Readable.from([tar]), output);
  await applyFolderModes(root, folderModes);
  return root;
}
const modeOf = (p: string) => statSync(p).mode & 0o7777;

describe('modes from a guest', () => {
  it('never takes setuid, setgid, sticky or world-write; applies the umask', () => {
    expect(hostMode(0o4777, 0o022)).toBe(0o755);
    expect(hostMode(0o2755, 0o022)).toBe(0o755);
    expect(hostMode(0o1777, 0o022)).toBe(0o755);
    expect(hostMode(0o0666, 0o022)).toBe(0o644);
    expect(hostMode(0o0666, 0)).toBe(0o664); // umask 0 still gets no world-write from a guest
    expect(hostMode(0o4777, 0)).toBe(0o775);
    expect(hostMode(0o0640, 0o022)).toBe(0o640);
    expect(hostMode(0o0755, 0o077)).toBe(0o700);
  });

  it('an extracted folder carries no setuid file, no 0777 folder, no sticky bit', async () => {
    const root = await extract(
      'modes',
      await archive([
        { name: 'open', type: 'directory', mode: 0o777 },
        { name: 'sticky', type: 'directory', mode: 0o1777 },
        { name: 'open/suid', mode: 0o4777, data: '#!/bin/sh\n' },
        { name: 'sticky/sgid', mode: 0o2755, data: 'x' },
        { name: 'sticky/shared', mode: 0o666, data: 'y' },
        { name: 'private', mode: 0o600, data: 'z' },
      ]),
      unlimited,
      0o022,
    );
    expect(modeOf(path.join(root, 'open'))).toBe(0o755);
    expect(modeOf(path.join(root, 'sticky'))).toBe(0o755);
    expect(modeOf(path.join(root, 'open/suid'))).toBe(0o755);
    expect(modeOf(path.join(root, 'sticky/sgid'))).toBe(0o755);
    expect(modeOf(path.join(root, 'sticky/shared'))).toBe(0o644);
    expect(modeOf(path.join(root, 'private'))).toBe(0o600);
  });

  it('a read-only folder gets its mode after its files are written', async () => {
    const root = await extract(
      'read-only',
      await archive([
        { name: 'ro', type: 'directory', mode: 0o555 },
        { name: 'ro/inner', type: 'directory', mode: 0o500 },
        { name: 'ro/inner/f', mode: 0o444, data: 'kept' },
      ]),
    );
    expect(readFileSync(path.join(root, 'ro/inner/f'), 'utf8')).toBe('kept');
    expect(modeOf(path.join(root, 'ro'))).toBe(0o555);
    expect(modeOf(path.join(root, 'ro/inner'))).toBe(0o500);
  });

  it('merged into an existing destination, folders already there keep their modes; new ones get theirs after the move', async () => {
    const from = path.join(dir, 'settle-from');
    mkdirSync(from);
    const { output, folderModes } = extractTo(from, () => undefined, unlimited, 0o022);
    await pipeline(
      Readable.from([
        await archive([
          { name: '.', type: 'directory', mode: 0o777 },
          { name: 'old', type: 'directory', mode: 0o555 },
          { name: 'old/f', mode: 0o644, data: 'new' },
          { name: 'new', type: 'directory', mode: 0o500 },
          { name: 'new/g', mode: 0o644, data: 'g' },
        ]),
      ]),
      output,
    );
    const to = path.join(dir, 'settle-to');
    mkdirSync(path.join(to, 'old'), { recursive: true });
    chmodSync(to, 0o750);
    chmodSync(path.join(to, 'old'), 0o700);
    await settleInto(from, to, folderModes);
    expect(readFileSync(path.join(to, 'old/f'), 'utf8')).toBe('new');
    expect(modeOf(to)).toBe(0o750);
    expect(modeOf(path.join(to, 'old'))).toBe(0o700);
    expect(modeOf(path.join(to, 'new'))).toBe(0o500);
    expect(existsSync(from)).toBe(false);
  });
});

describe('limits on a folder download', () => {
  it('counts entries and bytes, refusing the entry that crosses either', () => {
    const budget = new DownloadBudget({ maxBytes: 100, maxEntries: 3 });
    budget.admit('a', 60);
    budget.admit('b', 40);
    expect(() => budget.admit('c', 1)).toThrow(/more than the limit of 100 B: "c" \(1 B\) would bring it to 101 B/);
    const few = new DownloadBudget({ maxBytes: 1e9, maxEntries: 2 });
    few.admit('a', 0);
    few.admit('b', 0);
    expect(() => few.admit('c', 0)).toThrow(DownloadLimitError);
  });

  it('an archive past max bytes stops at the entry that crosses it, none of which is written', async () => {
    const kib = (c: string) => Buffer.alloc(1024, c);
    const tar = await archive([
      { name: 'd', type: 'directory', mode: 0o755 },
      { name: 'd/one', mode: 0o644, data: kib('1') },
      { name: 'd/two', mode: 0o644, data: kib('2') },
      { name: 'd/three', mode: 0o644, data: kib('3') },
    ]);
    const root = path.join(dir, 'over');
    mkdirSync(root);
    const { output } = extractTo(root, () => undefined, { maxBytes: 2560, maxEntries: 100 });
    const failure = await pipeline(Readable.from([tar]), output).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(failure).toBeInstanceOf(DownloadLimitError);
    expect(failure).toMatchObject({ kind: 'bytes', limit: 2560, atLeast: 3072 });
    expect((failure as Error).message).toContain('"d/three"');
    expect(existsSync(path.join(root, 'd/two'))).toBe(true);
    expect(existsSync(path.join(root, 'd/three'))).toBe(false);
  });

  it('an archive arriving in pieces fails once, through the extraction (no uncaught error from the entry left unread)', async () => {
    const tar = await archive([{ name: 'big', mode: 0o644, data: Buffer.alloc(3 << 20) }]);
    const pieces = Array.from({ length: Math.ceil(tar.length / 32768) }, (_, i) =>
      tar.subarray(i * 32768, (i + 1) * 32768),
    );
    const root = path.join(dir, 'pieces');
    mkdirSync(root);
    const { output } = extractTo(root, () => undefined, { maxBytes: 2 ** 20, maxEntries: 10 });
    await expect(pipeline(Readable.from(pieces), output)).rejects.toThrow(DownloadLimitError);
    await new Promise((resolve) => setImmediate(resolve)); // an uncaught error would surface by now
    expect(existsSync(path.join(root, 'big'))).toBe(false);
  });

  it('an archive of too many entries is refused at the first one over', async () => {
    const tar = await archive(Array.from({ length: 10 }, (_, i) => ({ name: `f${i}`, mode: 0o644 })));
    await expect(extract('entries', tar, { maxBytes: 1e9, maxEntries: 5 })).rejects.toMatchObject({
      kind: 'entries',
      limit: 5,
    });
    expect(existsSync(path.join(dir, 'entries', 'f5'))).toBe(false);
  });

  it('suggests a max_size a template can hold', () => {
    expect(templateSize(3 * 2 ** 20)).toBe('3M');
    expect(templateSize(3 * 2 ** 20 + 1)).toBe('4M');
    expect(templateSize(12)).toBe('1M');
    expect(templateSize(20 * 2 ** 30)).toBe('20G');
    expect(templateSize(10 * 2 ** 30 + 1)).toBe('11G');
  });
});

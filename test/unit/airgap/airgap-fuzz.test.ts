/**
 * Issue 23: a fuzz run over bundles. Seeded (the same cases every run), bounded by a count, not a clock.
 * Each case is a crafted bundle with hostile member names (.., absolute, empty, symlinks, hard links,
 * directories), manifest fields and index entries of every JSON type, or flipped bytes. kiln must only
 * ever refuse with its own BundleError, or open a bundle whose template and var-files lie inside the
 * unpacked tree; then the replay proxy must answer every recorded URL without a crash or an
 * unhandled rejection, and serve nothing from outside the bundle.
 */
import http from 'node:http';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openBundle, BundleError } from '../../../src/airgap/bundle-read.js';
import { PackageProxy } from '../../../src/airgap/proxy.js';
import { PackageStore } from '../../../src/airgap/store.js';
import { craftBundle, sha, type CraftedMember } from './airgap-crafted.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-airgap-fuzz-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** mulberry32: a tiny seeded PRNG, so a failing case can be run again by its number. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const SECRET = 'kiln-fuzz-host-secret';
const secretFile = path.join(dir, 'host-secret');
writeFileSync(secretFile, SECRET);

const hostilePaths = [
  '..',
  '../x',
  '../../etc/passwd',
  '/etc/passwd',
  secretFile,
  path.relative('/', secretFile),
  'a/../../b',
  'a//b',
  './a',
  '',
  '.',
  'a\nb',
  'a\u0000b',
  'tpl/kiln.yaml/x',
  'tpl',
  `blobs/${'0'.repeat(64)}`,
  'blobs/../manifest.json',
  'x'.repeat(5000),
  '\\..\\x',
];
const hostileValues: unknown[] = [
  null,
  true,
  0,
  -1,
  1.5,
  1e309,
  1000,
  99,
  '',
  [],
  {},
  { a: 1 },
  ['x'],
  'x'.repeat(70),
  '../../etc/shadow',
  'A'.repeat(64),
  '0'.repeat(63),
  NaN,
];
const hostileHeaders: Record<string, unknown>[] = [
  { 'content-type': 'a\r\nb: c' },
  { 'x-other': 'v' },
  { 'content-type': 7 },
  { 'bad name': 'v' },
  { location: '\u0000' },
  { etag: 'ok' },
  {},
];

describe('fuzzing bundles', () => {
  it('300 hostile bundles: only clean refusals, nothing read or served from outside the bundle', async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown) => unhandled.push(e);
    process.on('unhandledRejection', onUnhandled);
    const outcomes = { refused: 0, opened: 0, served: 0 };
    try {
      for (let seed = 1; seed <= 300; seed++) {
        const r = prng(seed);
        const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
        const files: Record<string, string> = {
          'tpl/kiln.yaml': 'builds: []\n',
          'tpl/vars.yaml': `v: ${seed}\n`,
          'images/base.img': 'disk',
        };
        // 0: a manifest field, 1: a member, 2: flipped bytes, 3: truncated, 4: an index entry, 5: a valid bundle with odd but valid answers.
        const kind = Math.floor(r() * 6);
        const b =
          kind === 4
            ? {
                status: pick([...hostileValues, 200]),
                headers: pick(hostileHeaders),
                ...(r() < 0.3 ? { sha256: pick([...hostileValues, sha(SECRET)]) } : {}),
              }
            : kind === 5
              ? {
                  status: pick([200, 204, 301, 404, 999, 100]),
                  headers: pick([{}, { etag: '"x"' }, { 'content-type': 'application/x', location: '/y' }]),
                }
              : {};
        const responses = [
          { url: 'http://deb.example/a.deb', body: `a${seed}` },
          { url: 'http://deb.example/b.deb', body: 'b', ...b },
        ];
        const bytes = await craftBundle({
          files,
          varFiles: ['tpl/vars.yaml'],
          responses,
          editManifest:
            kind === 0
              ? (m) => {
                  const fields = [
                    'template',
                    'varFiles',
                    'tree',
                    'members',
                    'packages',
                    'kind',
                    'version',
                    'kilnVersion',
                  ];
                  const field = pick(fields);
                  if (r() < 0.5) m[field] = pick([...hostileValues, ...hostilePaths]);
                  else if (Array.isArray(m[field]) && (m[field] as unknown[]).length) {
                    const list = m[field] as Record<string, unknown>[];
                    const i = Math.floor(r() * list.length);
                    if (typeof list[i] === 'object' && list[i])
                      list[i]![pick(['path', 'name', 'sha256', 'size', 'executable'])] = pick([
                        ...hostileValues,
                        ...hostilePaths,
                      ]);
                    else list[i] = pick(hostilePaths) as never;
                  } else m[field] = [pick(hostilePaths)];
                }
              : undefined,
          editMembers:
            kind === 1
              ? (list: CraftedMember[]) => {
                  const i = 1 + Math.floor(r() * (list.length - 1));
                  const type = pick(['file', 'symlink', 'link', 'directory'] as const);
                  const name = r() < 0.5 ? pick(hostilePaths) || 'x' : list[i]!.name;
                  list[i] =
                    type === 'file'
                      ? { name, body: Buffer.from(SECRET) }
                      : { name, type, linkname: pick([secretFile, '../../etc/passwd', 'manifest.json']) };
                  if (r() < 0.3) list.push({ ...list[i]! });
                }
              : undefined,
        });
        if (kind === 2)
          for (let k = 0; k < 4; k++) {
            const at = Math.floor(r() * bytes.length);
            bytes[at] = bytes[at]! ^ (1 + Math.floor(r() * 255));
          }
        const file = path.join(dir, `case-${seed}.kiln.tar`);
        writeFileSync(file, kind === 3 ? bytes.subarray(0, Math.floor(r() * bytes.length)) : bytes);
        const cache = path.join(dir, `cache-${seed}`);
        let opened;
        try {
          opened = await openBundle(file, cache);
        } catch (e) {
          if (!(e instanceof BundleError)) throw new Error(`case ${seed}: not a clean refusal: ${(e as Error).stack}`);
          expect((e as Error).message.length, `case ${seed}`).toBeLessThan(4000);
          expect(
            readdirSync(path.join(cache, 'airgap', 'bundles')).filter((f) => f.startsWith('.partial')),
            `case ${seed}: staging left`,
          ).toEqual([]);
          outcomes.refused++;
          continue;
        }
        outcomes.opened++;
        for (const f of [opened.template, ...opened.varFiles])
          expect(f.startsWith(opened.treeRoot + path.sep), `case ${seed}: ${f}`).toBe(true);
        if (!opened.manifest.packages) continue;
        const store = new PackageStore(opened.packagesDir, opened.blobsDir);
        const proxy = new PackageProxy('replay', store);
        const port = await proxy.listen();
        for (const { url } of store.responses()) {
          const body = await new Promise<string>((resolve) => {
            http
              .get({ host: '127.0.0.1', port, path: url, agent: false }, (res) => {
                let b = '';
                res.on('data', (c) => {
                  b += String(c);
                });
                res.on('end', () => resolve(b));
                res.on('error', () => resolve(b));
              })
              .on('error', () => resolve(''));
          });
          expect(body, `case ${seed}: ${url}`).not.toContain(SECRET);
          outcomes.served++;
        }
        await proxy.close();
        expect(proxy.errors, `case ${seed}`).toEqual([]);
      }
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
    expect(unhandled).toEqual([]);
    // The run exercised both sides: most cases are refused, some open and are served.
    expect(outcomes.refused).toBeGreaterThan(100);
    expect(outcomes.opened).toBeGreaterThan(10);
    expect(outcomes.served).toBeGreaterThan(10);
  }, 60_000);
});

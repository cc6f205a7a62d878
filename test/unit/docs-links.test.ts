/**
 * The user docs' links resolve: every relative link in README.md and docs/*.md names a file that exists,
 * and every #anchor names a heading of the page it points at (GitHub's slugs). No network: links with a
 * scheme (https:, mailto:) are left alone.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const root = path.resolve(__dirname, '../..');

/** The lines of a Markdown text outside fenced code blocks, with inline code spans blanked out. */
function proseLines(text: string): { line: number; text: string }[] {
  const out: { line: number; text: string }[] = [];
  let fence: string | undefined;
  text.split('\n').forEach((raw, i) => {
    const opener = /^\s*(```+|~~~+)/.exec(raw);
    if (opener) {
      if (fence === undefined) fence = opener[1]![0]!;
      else if (opener[1]![0] === fence) fence = undefined;
      return;
    }
    if (fence === undefined) out.push({ line: i + 1, text: raw.replace(/(`+)[^`]*?\1/g, '') });
  });
  return out;
}

/** GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens; repeats get -1, -2... */
export function headingAnchors(text: string): Set<string> {
  const anchors = new Set<string>();
  const seen = new Map<string, number>();
  let fence: string | undefined;
  for (const raw of text.split('\n')) {
    const opener = /^\s*(```+|~~~+)/.exec(raw);
    if (opener) {
      if (fence === undefined) fence = opener[1]![0]!;
      else if (opener[1]![0] === fence) fence = undefined;
      continue;
    }
    if (fence !== undefined) continue;
    const m = /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(raw);
    if (!m) continue;
    const slug = m[1]!
      .toLowerCase()
      .replace(/\[([^\]]*)\]\([^)]*\)/g, '$1')
      .replace(/[^\p{L}\p{N}\s_-]/gu, '')
      .replace(/\s/g, '-');
    const n = seen.get(slug) ?? 0;
    seen.set(slug, n + 1);
    anchors.add(n === 0 ? slug : `${slug}-${n}`);
  }
  return anchors;
}

/** Every problem with the relative links of one Markdown file, as "file:line: link: why". */
export function brokenLinks(file: string): string[] {
  const problems: string[] = [];
  const rel = path.relative(root, file);
  for (const { line, text } of proseLines(readFileSync(file, 'utf8'))) {
    for (const m of text.matchAll(/!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)) {
      const link = m[1]!;
      if (/^[a-z][a-z0-9+.-]*:/i.test(link)) continue;
      const [target, anchor] = link.split('#', 2) as [string, string | undefined];
      const dest = target === '' ? file : path.resolve(path.dirname(file), decodeURIComponent(target));
      if (!existsSync(dest)) {
        problems.push(`${rel}:${line}: ${link}: ${path.relative(root, dest)} does not exist`);
        continue;
      }
      if (anchor === undefined) continue;
      if (statSync(dest).isDirectory() || !dest.endsWith('.md')) {
        problems.push(`${rel}:${line}: ${link}: an anchor into ${path.relative(root, dest)}, which has no headings`);
        continue;
      }
      if (!headingAnchors(readFileSync(dest, 'utf8')).has(anchor)) {
        problems.push(`${rel}:${line}: ${link}: no heading in ${path.relative(root, dest)} has the anchor #${anchor}`);
      }
    }
  }
  return problems;
}

const docsDir = path.join(root, 'docs');
const files = [
  path.join(root, 'README.md'),
  ...readdirSync(docsDir)
    .filter((f) => f.endsWith('.md'))
    .sort()
    .map((f) => path.join(docsDir, f)),
];

describe('documentation links', () => {
  it('finds the pages to check', () => {
    expect(files.length).toBeGreaterThan(5);
  });

  it.each(files.map((f) => [path.relative(root, f), f]))(
    '%s: every relative link and #anchor resolves',
    (_name, file) => {
      expect(brokenLinks(file)).toEqual([]);
    },
  );

  it('README.md links to every page in docs/', () => {
    const readme = readFileSync(path.join(root, 'README.md'), 'utf8');
    const unlinked = files
      .filter((f) => path.dirname(f) === docsDir)
      .map((f) => `docs/${path.basename(f)}`)
      .filter((f) => !readme.includes(`](${f}`) && path.basename(f) !== 'template-reference.md');
    expect(unlinked).toEqual([]);
  });
});

describe('the link checker itself', () => {
  it('makes GitHub anchors, numbering repeats', () => {
    const a = headingAnchors(
      '# Coming from Packer\n## The long tests (`make test-install`)\n## Faults\n## Faults\n```\n# not a heading\n```\n',
    );
    expect([...a]).toEqual(['coming-from-packer', 'the-long-tests-make-test-install', 'faults', 'faults-1']);
  });

  it('reports a missing file and a missing anchor, and skips code and URLs', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-docs-links-'));
    const tmp = path.join(dir, 'page.md');
    writeFileSync(
      tmp,
      '# Top\n[ok](#top) [gone](nope.md) [bad](#nowhere) [web](https://example.com/x.md)\n`[code](nope2.md)`\n```\n[fenced](nope3.md)\n```\n',
    );
    try {
      const rel = path.relative(root, tmp);
      expect(brokenLinks(tmp)).toEqual([
        `${rel}:2: nope.md: ${path.relative(root, path.join(dir, 'nope.md'))} does not exist`,
        `${rel}:2: #nowhere: no heading in ${rel} has the anchor #nowhere`,
      ]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

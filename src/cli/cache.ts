/**
 * `kiln cache ls|prune|rm|flush`: look into and trim the layer cache (see src/cache/layers.ts) and the
 * unpacked bundles (src/airgap/unpacked.ts); with --remote, prune or flush the shared remote cache
 * (src/cache/remote).
 */
import { cacheDirFromEnv } from './env.js';
import { LayerStore, type LayerMeta } from '../cache/layers.js';
import { listUnpackedBundles, pruneUnpackedBundles, type UnpackedBundle } from '../airgap/unpacked.js';
import { formatBytes, parseDuration, parseSize } from '../util/units.js'; // a CLI flag's value, not a template field
import { openRemoteCache } from './remote-cache.js';
import { KilnError } from '../util/errors.js';

export interface CacheArgs {
  action: 'ls' | 'prune' | 'rm' | 'flush';
  key?: string;
  'keep-size'?: string;
  json?: boolean;
  /** prune/flush the remote cache at this s3:// URL. */
  remote?: string;
  'older-than'?: string;
  grace?: string;
}

/** "30d" as well as the template durations ("12h", "90m"). */
function durationMs(flag: string, value: string): number {
  const days = /^(\d+)d$/.exec(value.trim());
  try {
    return days ? Number(days[1]) * 86_400_000 : parseDuration(value);
  } catch (e) {
    throw new Error(`--${flag}: ${(e as Error).message} (or days: "30d")`);
  }
}

/** prune --remote: records first, then blobs no record names; flush: a new epoch. */
async function remoteCacheCommand(args: CacheArgs, out: (s: string) => void): Promise<number> {
  const remote = (await openRemoteCache({ 'cache-remote': args.remote }, (m) => process.stderr.write(`${m}\n`)))!;
  if (args.action === 'flush') {
    const epoch = await remote.flush();
    out(
      `${remote.location}: cache epoch ${epoch}; what builders shared before is no longer used ("kiln cache prune --remote ${args.remote}" removes it)\n`,
    );
    return 0;
  }
  if (args.action !== 'prune')
    throw new KilnError(`kiln cache ${args.action} does not take --remote`, {
      fix: `kiln cache prune --remote URL, or kiln cache flush --remote URL`,
    });
  const r = await remote.prune({
    graceMs: durationMs('grace', args.grace ?? '1h'),
    olderThanMs: args['older-than'] ? durationMs('older-than', args['older-than']) : undefined,
  });
  if (args.json) {
    out(JSON.stringify({ remote: remote.location, ...r }, null, 2) + '\n');
    return 0;
  }
  out(
    `${remote.location}: removed ${r.records} record${r.records === 1 ? '' : 's'}, then ${r.blobs} blob${r.blobs === 1 ? '' : 's'} no record names (${formatBytes(r.bytes)})${r.uploads ? ` and ${r.uploads} unfinished upload${r.uploads === 1 ? '' : 's'}` : ''}\n`,
  );
  return 0;
}

function age(d: Date): string {
  const s = Math.max(0, (Date.now() - d.getTime()) / 1000);
  if (s < 120) return `${Math.round(s)}s ago`;
  if (s < 7200) return `${Math.round(s / 60)}m ago`;
  if (s < 172800) return `${Math.round(s / 3600)}h ago`;
  return `${Math.round(s / 86400)}d ago`;
}

/** A layer named by a unique prefix of its key (at least 6 characters), as `ls` prints them. */
function resolveKey(store: LayerStore, prefix: string): LayerMeta {
  if (!/^[0-9a-f]{6,64}$/.test(prefix))
    throw new KilnError(`"${prefix}" is not a layer key`, {
      fix: `give at least 6 hex characters of a KEY that "kiln cache ls" shows`,
    });
  const matches = store.list().filter((m) => m.key.startsWith(prefix));
  if (matches.length === 0)
    throw new KilnError(`no layer ${prefix} in ${store.dir}`, { fix: `"kiln cache ls" lists the layers` });
  if (matches.length > 1)
    throw new KilnError(
      `"${prefix}" matches ${matches.length} layers (${matches.map((m) => m.key.slice(0, 16)).join(', ')})`,
      { fix: `give more of the key` },
    );
  return matches[0]!;
}

const bundleBytes = (bundles: UnpackedBundle[]) => bundles.reduce((n, b) => n + b.bytes, 0);

function printBundles(bundles: UnpackedBundle[], out: (s: string) => void): void {
  if (!bundles.length) return;
  out(`\nunpacked bundles (kiln build --bundle; unpacked again from the bundle when needed):\n`);
  for (const b of bundles)
    out(
      `${b.sha256.slice(0, 12)}  ${formatBytes(b.bytes).padEnd(9)}  ${age(b.lastUsed).padEnd(9)}  ${b.inUse ? 'in use' : b.sha256.startsWith('.partial') ? 'partial (left by a killed kiln)' : ''}\n`,
    );
}

export async function cacheCommand(args: CacheArgs): Promise<number> {
  const cacheDir = cacheDirFromEnv();
  const store = new LayerStore(cacheDir);
  const out = (s: string) => process.stdout.write(s);
  if (args.remote || args.action === 'flush') {
    if (!args.remote)
      throw new KilnError('kiln cache flush needs --remote s3://bucket/prefix', {
        fix: 'the local cache has no epoch; "kiln cache prune --keep-size 0" empties it',
      });
    try {
      return await remoteCacheCommand(args, out);
    } catch (e) {
      const message = (e as Error).message;
      if (message.includes('\n  fix:')) throw e;
      let endpoint = process.env.AWS_ENDPOINT_URL_S3 ?? process.env.AWS_ENDPOINT_URL;
      // Never a credential in a message: an endpoint URL could carry user:password.
      try {
        if (endpoint) {
          const u = new URL(endpoint);
          u.username = '';
          u.password = '';
          endpoint = u.origin;
        }
      } catch {
        /* printed as given */
      }
      throw new KilnError(`remote cache ${args.remote}: ${message}`, {
        fix: `check the endpoint (${endpoint ? `AWS_ENDPOINT_URL=${endpoint}` : 'AWS S3; set AWS_ENDPOINT_URL for another store'}), AWS_REGION, the bucket's name and the credentials the AWS SDK finds (AWS_PROFILE, ~/.aws, AWS_ACCESS_KEY_ID)`,
      });
    }
  }
  switch (args.action) {
    case 'ls': {
      const layers = store.list().sort((a, b) => a.created.localeCompare(b.created));
      const bundles = listUnpackedBundles(cacheDir);
      if (args.json) {
        out(
          JSON.stringify(
            {
              directory: store.dir,
              total_bytes: store.totalBytes(),
              layers: layers.map((m) => ({ ...m, last_used: store.lastUsed(m.key).toISOString() })),
              bundles: bundles.map((b) => ({
                sha256: b.sha256,
                directory: b.dir,
                bytes: b.bytes,
                last_used: b.lastUsed.toISOString(),
                in_use: b.inUse,
              })),
            },
            null,
            2,
          ) + '\n',
        );
        return 0;
      }
      if (!layers.length) {
        out(`no layers in ${store.dir}\n`);
        printBundles(bundles, out);
        return 0;
      }
      const rows = layers.map((m) => [
        m.key.slice(0, 12),
        m.parent ? m.parent.slice(0, 12) : (m.backing ?? '-').slice(0, 17),
        formatBytes(m.size) +
          (m.vmState
            ? ` + VM ${formatBytes(m.vmState.size)} (saved in ${(m.vmState.saveMs / 1000).toFixed(2)} s)`
            : ''),
        age(store.lastUsed(m.key)),
        `${m.build} ${m.final ? 'final' : m.warmBase ? 'warm base' : `#${m.provisioner}`}`,
        m.description,
      ]);
      const head = ['KEY', 'PARENT', 'SIZE', 'LAST USED', 'BUILD', 'PROVISIONER'];
      const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
      for (const r of [head, ...rows])
        out(r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ') + '\n');
      out(
        `${layers.length} layer${layers.length === 1 ? '' : 's'}, ${formatBytes(store.totalBytes())} in ${store.dir} (base images included)\n`,
      );
      printBundles(bundles, out);
      return 0;
    }
    case 'rm': {
      if (!args.key)
        throw new KilnError('kiln cache rm needs a KEY', {
          fix: '"kiln cache ls" lists them; "kiln cache prune --keep-size 0" empties the cache',
        });
      const layer = resolveKey(store, args.key);
      if (store.inUse().has(layer.key))
        throw new KilnError(`layer ${layer.key.slice(0, 12)} is in use by a running build`, {
          fix: `wait for it to finish`,
        });
      const removed = store.remove(layer.key);
      store.removeUnusedBases();
      out(
        `removed ${removed.map((k) => k.slice(0, 12)).join(', ')}${removed.length > 1 ? ' (the layer and those built on it)' : ''}\n`,
      );
      return 0;
    }
    case 'prune': {
      if (args['keep-size'] === undefined)
        throw new KilnError('kiln cache prune needs --keep-size', {
          fix: 'e.g. kiln cache prune --keep-size 20G (least recently used layers go first)',
        });
      let keep: number;
      try {
        keep = parseSize(args['keep-size']);
      } catch (e) {
        throw new Error(`--keep-size: ${(e as Error).message}`);
      }
      const before = store.totalBytes() + bundleBytes(listUnpackedBundles(cacheDir));
      // Unpacked bundles go first (kiln unpacks them again from the bundle), then layers with what is left of the budget.
      const removedBundles = pruneUnpackedBundles(cacheDir, Math.max(0, keep - store.totalBytes()));
      const removed = store.prune(Math.max(0, keep - bundleBytes(listUnpackedBundles(cacheDir))));
      const after = store.totalBytes() + bundleBytes(listUnpackedBundles(cacheDir));
      const bundlesSaid = removedBundles.length
        ? ` and ${removedBundles.length} unpacked bundle${removedBundles.length === 1 ? '' : 's'}`
        : '';
      out(
        `removed ${removed.length} layer${removed.length === 1 ? '' : 's'}${bundlesSaid}; ${formatBytes(before)} -> ${formatBytes(after)}${after > keep ? ` (layers and bundles in use by running builds are kept)` : ''}\n`,
      );
      return 0;
    }
  }
}

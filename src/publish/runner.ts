/**
 * Runs a build's publish targets against its manifest.json, one after another, and records in the
 * manifest under `published` where each image now lives (or that it failed). Used by the build's
 * publish step and by `kiln publish manifest.json`, which re-runs the targets a manifest records.
 * Each target's settings are stored with its record (they hold no secrets), so a later `kiln publish`
 * needs only the manifest and the credentials.
 */
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import cliProgress from 'cli-progress';
import type { Manifest, PublishedRecord } from '../artifacts/manifest.js';
import { LayerStore } from '../cache/layers.js';
import type { BuildEvent } from '../ui/events.js';
import {
  EFI_VARS_FORMAT,
  publishTargetName,
  publishTargetSchema,
  publishTimeouts,
  type PublishTarget,
} from '../template/schema-publish.js';
import { checkSize } from './integrity.js';
import { cleartextWarning, safeUrl, scrubUrls } from './redact.js';
import { KilnError, fixOf } from '../util/errors.js';
import {
  PublishError,
  type CredentialDestination,
  type PublishArtifact,
  type PublishContext,
  type Publisher,
  type PublishResult,
} from './target.js';
// Each target's SDK loads only when a build publishes to it: the AWS and Azure SDKs alone took
// ~0.6 s of CPU to import, paid by every kiln command (validate, build without publish, --version).
const publishers: Record<PublishTarget['type'], () => Promise<Publisher<never>>> = {
  s3: async () => (await import('./s3.js')).publishS3 as Publisher<never>,
  oci: async () => (await import('./oci.js')).publishOci as Publisher<never>,
  glance: async () => (await import('./glance.js')).publishGlance as Publisher<never>,
  azure: async () => (await import('./azure.js')).publishAzure as Publisher<never>,
};

export interface PublishOptions {
  signal: AbortSignal;
  env?: NodeJS.ProcessEnv;
  /** Only these target names (`--only`). */
  only?: string[];
  uefi?: boolean;
  log(message: string): void;
  /** 'bar' draws cli-progress bars (a TTY); 'lines' prints a line per quarter. */
  progress?: 'bar' | 'lines' | 'none';
  /**
   * Called with each target's record once it is published or has failed (the build's `published`
   * event). Records hold no credentials. When given, the runner prints no result line of its own.
   */
  onResult?: (record: PublishedRecord) => void;
  /**
   * The layer cache's directory: a manifest the cache recorded as the untouched output of a build is
   * recorded again after the publish records are written into it, so the next identical build is
   * still up to date (and only publishes).
   */
  cacheDir?: string;
  /**
   * Set by `kiln publish`, whose targets come from a manifest.json that anyone with write access to
   * it can edit: a credential goes to a host taken from the manifest's settings only when that host
   * is listed here (`--allow-host`). Hosts named by the environment or a credentials file (the AWS
   * endpoint of a region, a connection string's endpoint, the Keystone catalog, a docker config.json
   * entry keyed by its registry) need no confirmation. Unset: the targets come from the template.
   */
  allowHosts?: string[];
}

/** Every failed target's line (with its fix); `fix` is set when one target failed with a fix. */
export class PublishFailed extends KilnError {}

/** A target's record as the `published` event `kiln build` and `kiln publish --events=json` emit: no credentials, no settings. */
export function publishedEvent(build: string, r: PublishedRecord): Extract<BuildEvent, { type: 'published' }> {
  return {
    type: 'published',
    build,
    target: r.target,
    targetType: r.type,
    ok: r.status === 'published',
    ...(r.location ? { location: r.location } : {}),
    ...(r.id ? { id: r.id } : {}),
    ...(r.remote_digest ? { remoteDigest: r.remote_digest } : {}),
    ...(r.status === 'published'
      ? { unchanged: !!r.unchanged, bytesSent: r.bytes_sent ?? 0, ms: r.duration_ms ?? 0 }
      : {}),
    ...(r.error ? { error: r.error } : {}),
  };
}

/** The line a published target gets in the log: where the image is, and whether anything was sent. */
export function publishedLine(r: PublishedRecord): string {
  return `publish ${r.target}: ${r.unchanged ? 'already there' : 'published'} ${r.location ?? ''}${r.id ? ` (${r.id})` : ''} in ${r.duration_ms ?? 0} ms`;
}

/** The artifact a target uploads: the uncompressed one of its format. */
export function artifactFor(manifest: Manifest, target: PublishTarget, manifestFile: string): PublishArtifact {
  const candidates = manifest.artifacts.filter((a) => a.format === target.format);
  const a = candidates.find((c) => !c.compression) ?? candidates[0];
  if (!a) {
    throw new PublishError(
      `publish target "${publishTargetName(target)}" needs a ${target.format} artifact, and ${manifestFile} lists ${manifest.artifacts.map((x) => x.format).join(', ') || 'none'}`,
      {
        fix:
          target.format === EFI_VARS_FORMAT
            ? 'the UEFI variable store comes from a UEFI build: set firmware: uefi in its source and build again'
            : `add "- format: ${target.format}" under the build's outputs`,
      },
    );
  }
  if (a.compression) {
    throw new PublishError(
      `publish target "${publishTargetName(target)}": the ${target.format} artifact ${a.name} is ${a.compression}-compressed, and the target needs the image itself`,
      { fix: `set keep_input: true on the compress post-processor, or list formats: without ${target.format}` },
    );
  }
  return {
    name: a.name,
    path: path.isAbsolute(a.path) ? a.path : path.resolve(path.dirname(manifestFile), a.path),
    format: a.format,
    size: a.size,
    sha256: a.sha256,
  };
}

function readManifest(file: string): Manifest {
  return JSON.parse(readFileSync(file, 'utf8')) as Manifest;
}

function writeManifest(file: string, m: Manifest): void {
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, JSON.stringify(m, null, 2) + '\n');
  renameSync(tmp, file);
}

/**
 * Writes the manifest, and when the layer cache holds it as part of a build's untouched output (the
 * store checks size, mtime and inode), records that output again: publish records change nothing the
 * build made, and without this the next identical build would rebuild instead of being up to date.
 * A manifest that was already changed by hand (or an output the store does not know) is left alone.
 */
function cachedManifestWriter(
  manifestFile: string,
  manifest: Manifest,
  cacheDir: string | undefined,
): { write(m: Manifest): void } {
  const key = manifest.cache?.artifact_key;
  const store = cacheDir && key ? new LayerStore(cacheDir) : undefined;
  const record = store && key ? store.artifactRecord(key) : undefined;
  const lists = record?.files.some((f) => path.resolve(f.path) === path.resolve(manifestFile));
  let refresh = !!(record && lists && LayerStore.untouched(record));
  return {
    write(m) {
      writeManifest(manifestFile, m);
      if (!refresh) return;
      // Re-read before re-recording: another kiln may have changed the output meanwhile.
      const now = store!.artifactRecord(key!);
      if (
        !now ||
        !now.files.every(
          (f) => path.resolve(f.path) === path.resolve(manifestFile) || LayerStore.untouched({ ...now, files: [f] }),
        )
      ) {
        refresh = false;
        return;
      }
      store!.recordArtifacts(
        key!,
        now.outputDirectory,
        now.files.map((f) => f.path),
      );
    },
  };
}

/** The targets a manifest records (for `kiln publish`), checked again against the schema. */
export function recordedTargets(manifestFile: string): PublishTarget[] {
  const m = readManifest(manifestFile);
  if (!m.published?.length) {
    throw new PublishError(`${manifestFile} records no publish targets (its build had no publish: list)`, {
      fix: `add a publish: list to the build in ${m.template?.file ?? 'its template'} and build it again`,
    });
  }
  return m.published.map((r, i) => {
    const parsed = publishTargetSchema.safeParse(r.config);
    if (parsed.success) return parsed.data;
    // One line per problem, naming the field; the value is never repeated (it may hold a password).
    const issue = parsed.error.issues[0]!;
    const fix = (issue as { params?: { fix?: unknown } }).params?.fix;
    throw new PublishError(`${manifestFile}: published[${i}].config.${issue.path.join('.')}: ${issue.message}`, {
      fix: `${typeof fix === 'string' ? fix : "correct it in the template and build again (a manifest records the template's publish settings)"}`,
    });
  });
}

function progressReporter(
  opts: PublishOptions,
  label: string,
): { progress: (sent: number, total: number) => void; stop(): void } {
  if (opts.progress === 'bar') {
    const bar = new cliProgress.SingleBar(
      { format: `${label} [{bar}] {percentage}% {value}/{total} bytes`, stream: process.stderr },
      cliProgress.Presets.shades_classic,
    );
    let started = false;
    return {
      progress(sent, total) {
        if (!started) {
          bar.start(total, 0);
          started = true;
        }
        bar.update(Math.min(sent, total));
      },
      stop() {
        if (started) bar.stop();
      },
    };
  }
  if (opts.progress === 'none') return { progress() {}, stop() {} };
  let nextQuarter = 1;
  return {
    progress(sent, total) {
      while (total > 0 && nextQuarter <= 4 && sent >= (total * nextQuarter) / 4) {
        opts.log(`${label}: ${nextQuarter * 25}% (${sent} of ${total} bytes)`);
        nextQuarter++;
      }
    },
    stop() {},
  };
}

/** Whether `--allow-host` entries (host, host:port, or a URL) confirm `url`'s host. */
export function hostAllowed(url: string, allow: string[]): boolean {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return false;
  }
  return allow.some((a) => {
    const entry = a.trim().toLowerCase();
    const host = /^[a-z][a-z0-9+.-]*:\/\//.test(entry)
      ? (() => {
          try {
            return new URL(entry).host;
          } catch {
            return entry;
          }
        })()
      : entry;
    return host === u.host.toLowerCase() || host === u.hostname.toLowerCase();
  });
}

/**
 * The runner's answer to a target about to send a credential: one line saying where it goes, a
 * warning (once per endpoint per run) when it crosses a network in clear, and, for `kiln publish`,
 * a refusal when the host comes from the manifest and was not confirmed with --allow-host.
 */
function credentialGate(
  opts: PublishOptions,
  name: string,
  warned: Set<string>,
  manifestFile: string,
): (d: CredentialDestination) => void {
  return (d) => {
    let host = d.url;
    try {
      host = new URL(d.url).host;
    } catch {
      /* shown as given */
    }
    if (opts.allowHosts && d.hostFromSettings && !hostAllowed(d.url, opts.allowHosts)) {
      throw new PublishError(
        `publish target "${name}": ${manifestFile} names ${d.kind} at ${host}, and kiln publish sends ${d.from} only to a host you confirm (a manifest is a file anyone who can write it may have edited)`,
        { fix: `check the host is yours, then run kiln publish --allow-host ${host} ${manifestFile}` },
      );
    }
    opts.log(`publish ${name}: sending credentials from ${d.from} to ${d.kind} at ${host}`);
    const warning = cleartextWarning(d.url, `${d.from} (for ${d.kind})`);
    const key = `${d.from} ${host}`;
    if (warning && !warned.has(key)) {
      warned.add(key);
      opts.log(`warning: publish ${name}: ${warning}`);
    }
  };
}

/**
 * Publishes to each target in turn, writing the manifest after each. Throws PublishFailed naming every
 * target that failed (the others are published and recorded).
 */
export async function publishManifest(
  manifestFile: string,
  targets: PublishTarget[],
  opts: PublishOptions,
): Promise<PublishedRecord[]> {
  const manifest = readManifest(manifestFile);
  const selected = opts.only?.length ? targets.filter((t) => opts.only!.includes(publishTargetName(t))) : targets;
  if (opts.only?.length) {
    const names = targets.map(publishTargetName);
    const unknown = opts.only.filter((o) => !names.includes(o));
    if (unknown.length)
      throw new PublishError(
        `--only ${unknown.join(',')}: no such publish target in ${manifestFile} (it has ${names.join(', ')})`,
        { fix: `name one of those` },
      );
  }
  const records: PublishedRecord[] = targets.map((t) => {
    const prev = manifest.published?.find((r) => r.target === publishTargetName(t));
    return prev && !selected.includes(t)
      ? prev
      : {
          target: publishTargetName(t),
          type: t.type,
          format: t.format,
          status: 'pending',
          config: t as unknown as Record<string, unknown>,
          ...(opts.uefi ? { uefi: true } : {}),
        };
  });
  // `kiln publish` does not know the firmware: the build's publish step recorded it.
  const uefi = opts.uefi ?? manifest.published?.some((r) => r.uefi) ?? false;
  const cached = cachedManifestWriter(manifestFile, manifest, opts.cacheDir);
  const failures: string[] = [];
  const fixes: (string | undefined)[] = [];
  const warned = new Set<string>();
  // Whatever a target or its SDK says goes through here: no URL's query (a SAS token) or userinfo.
  const log = (m: string) => opts.log(scrubUrls(m));
  for (const t of selected) {
    const name = publishTargetName(t);
    const i = records.findIndex((r) => r.target === name);
    const started = performance.now();
    const reporter = progressReporter(opts, `publish ${name}`);
    try {
      const artifact = artifactFor(manifest, t, manifestFile);
      checkSize(artifact);
      const ctx: PublishContext = {
        signal: opts.signal,
        env: opts.env ?? process.env,
        build: manifest.build,
        uefi,
        arch: manifest.arch ?? 'x86_64',
        log: (m) => log(`publish ${name}: ${m}`),
        progress: reporter.progress,
        timeouts: publishTimeouts(t),
        credentialsTo: credentialGate({ ...opts, log }, name, warned, manifestFile),
      };
      const r: PublishResult = await (await publishers[t.type]())(t as never, artifact, ctx);
      reporter.stop();
      const ms = Math.round(performance.now() - started);
      records[i] = {
        target: name,
        type: t.type,
        format: t.format,
        status: 'published',
        artifact: artifact.name,
        location: safeUrl(r.location),
        ...(r.id ? { id: r.id } : {}),
        remote_digest: r.remote_digest,
        unchanged: r.unchanged,
        bytes_sent: r.bytes_sent,
        duration_ms: ms,
        published_at: new Date().toISOString(),
        config: t as unknown as Record<string, unknown>,
        ...(uefi ? { uefi } : {}),
      };
      if (!opts.onResult) log(publishedLine(records[i]!));
    } catch (e) {
      reporter.stop();
      if (opts.signal.aborted) {
        records[i] = { ...records[i]!, status: 'failed', error: 'interrupted' };
        manifest.published = records;
        cached.write(manifest);
        opts.onResult?.(records[i]!);
        throw e;
      }
      const line = scrubUrls((e as Error).message);
      records[i] = { ...records[i]!, status: 'failed', error: line.split('\n')[0]! };
      failures.push(line.startsWith('publish target "') ? line : `publish target "${name}": ${line}`);
      const fix = fixOf(e);
      fixes.push(fix === undefined ? undefined : scrubUrls(fix));
    }
    manifest.published = records;
    cached.write(manifest);
    opts.onResult?.(records[i]!);
  }
  if (!selected.length) {
    manifest.published = records;
    cached.write(manifest);
  }
  if (failures.length === 1 && fixes[0] !== undefined && failures[0]!.endsWith(`\n  fix: ${fixes[0]}`))
    throw new PublishFailed(failures[0]!.slice(0, -`\n  fix: ${fixes[0]}`.length), { fix: fixes[0] });
  if (failures.length) throw new PublishFailed(failures.join('\n'));
  return records;
}

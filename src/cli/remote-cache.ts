/**
 * --cache-remote and its companions: the shared layer cache (src/cache/remote) on S3 or an
 * S3-compatible store. The endpoint, region and credentials are the AWS SDK's own (AWS_ENDPOINT_URL,
 * AWS_REGION, AWS_PROFILE, ~/.aws files, AWS_ACCESS_KEY_ID...): kiln reads none of them itself.
 */
import { readFileSync } from 'node:fs';
import { RemoteCache, type RemoteLog } from '../cache/remote/protocol.js';
import { kilnVersion } from '../version.js';
import { KilnError } from '../util/errors.js';

export interface RemoteCacheArgs {
  'cache-remote'?: string;
  'cache-remote-readonly'?: boolean;
  'cache-remote-secret-file'?: string;
  'cache-remote-intermediate'?: boolean;
}

/** The yargs options, shared by the commands that take a remote cache. */
export const remoteCacheOptions = {
  'cache-remote': {
    type: 'string',
    requiresArg: true,
    describe:
      'share final disks through this layer cache (s3://bucket/prefix; endpoint and credentials as the AWS CLI reads them)',
  },
  'cache-remote-readonly': { type: 'boolean', default: false, describe: 'use the remote cache, never upload to it' },
  'cache-remote-intermediate': {
    type: 'boolean',
    default: false,
    describe:
      "share and pull the layers between provisioners too (disks before kiln's clean-up: what provisioners wrote is in them); only final disks by default",
  },
  'cache-remote-secret-file': {
    type: 'string',
    requiresArg: true,
    describe:
      'a secret every builder shares, keying the names in the remote cache (needed for templates with sensitive values)',
  },
} as const;

/**
 * The remote cache the arguments name, or undefined without --cache-remote. The S3 SDK is loaded only
 * then: importing it took 0.4 s, which every kiln command paid at its start.
 */
export async function openRemoteCache(a: RemoteCacheArgs, log?: RemoteLog): Promise<RemoteCache | undefined> {
  const url = a['cache-remote'];
  if (!url) {
    if (a['cache-remote-readonly'] || a['cache-remote-secret-file'] || a['cache-remote-intermediate'])
      throw new Error(
        '--cache-remote-readonly, --cache-remote-intermediate and --cache-remote-secret-file need --cache-remote s3://bucket/prefix',
      );
    return undefined;
  }
  let secret: string | undefined;
  const file = a['cache-remote-secret-file'];
  if (file) {
    try {
      secret = readFileSync(file, 'utf8').trim();
    } catch (e) {
      throw new KilnError(
        `--cache-remote-secret-file ${file}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`,
        { fix: `give every builder the same file with one secret line, readable only by the builder` },
      );
    }
    if (!secret)
      throw new KilnError(`--cache-remote-secret-file ${file} is empty`, {
        fix: `write one secret line into it (e.g. openssl rand -hex 32)`,
      });
  }
  const { S3ObjectStore } = await import('../cache/remote/s3.js');
  return new RemoteCache(
    new S3ObjectStore(url),
    {
      readonly: a['cache-remote-readonly'] === true,
      intermediate: a['cache-remote-intermediate'] === true,
      secret,
      kilnVersion,
    },
    log,
  );
}

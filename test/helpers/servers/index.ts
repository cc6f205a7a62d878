/**
 * Real upload servers for the publish tests, each on loopback with a free port, its data in a temp
 * directory, killed (and the directory removed) by stop(): s3rver (S3 multipart), Azurite (Azure blob,
 * page blobs), Debian's docker-registry (CNCF distribution) and Debian's Glance without Keystone.
 * Also Debian's Swift with s3api, for what s3rver lacks (aborting multipart uploads).
 * Start them in parallel: Glance's database setup takes seconds.
 */
import { execa, type ResultPromise } from 'execa';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { repoRoot } from '../guest.js';
import { freePort } from '../../../src/qemu/ports.js';

export interface RunningServer {
  url: string;
  dir: string;
  stop(): Promise<void>;
  log(): string;
}

async function waitFor(
  url: string,
  child: ResultPromise,
  what: string,
  timeoutMs = 60_000,
  ok = (s: number) => s < 500,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let exited = false;
  void child.then(
    () => {
      exited = true;
    },
    () => {
      exited = true;
    },
  );
  for (;;) {
    if (exited) throw new Error(`${what} exited before answering on ${url}`);
    try {
      const r = await fetch(url, { signal: AbortSignal.timeout(2000) });
      await r.body?.cancel();
      if (ok(r.status)) return;
    } catch {
      /* not up yet */
    }
    if (Date.now() > deadline) throw new Error(`${what} did not answer on ${url} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function running(child: ResultPromise, dir: string, url: string): RunningServer {
  let output = '';
  child.stdout?.on('data', (d: Buffer) => {
    output += d.toString();
  });
  child.stderr?.on('data', (d: Buffer) => {
    output += d.toString();
  });
  return {
    url,
    dir,
    log: () => output,
    async stop() {
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      await child.catch(() => undefined);
      clearTimeout(t);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

const bin = (name: string) => path.join(repoRoot, 'node_modules/.bin', name);

/** The environment the AWS SDK (and so kiln's --cache-remote) reads to reach a test S3 server. */
export function awsEnvFor(server: {
  url: string;
  accessKeyId: string;
  secretAccessKey: string;
}): Record<string, string> {
  return {
    AWS_ENDPOINT_URL: server.url,
    AWS_REGION: 'us-east-1',
    AWS_ACCESS_KEY_ID: server.accessKeyId,
    AWS_SECRET_ACCESS_KEY: server.secretAccessKey,
  };
}

/** s3rver with a bucket `images`; its access key and secret are both S3RVER. */
export async function startS3(
  bucket = 'images',
): Promise<RunningServer & { accessKeyId: string; secretAccessKey: string }> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-s3-'));
  const port = await freePort();
  const child = execa(
    bin('s3rver'),
    ['-d', dir, '-a', '127.0.0.1', '-p', String(port), '--configure-bucket', bucket, '--silent'],
    { reject: false, buffer: false },
  );
  const s = running(child, dir, `http://127.0.0.1:${port}`);
  await waitFor(`${s.url}/`, child, 's3rver');
  return { ...s, accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' };
}

/** Azurite's blob service with its well-known development account. */
export async function startAzurite(): Promise<RunningServer & { connectionString: string }> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-azurite-'));
  const port = await freePort();
  const child = execa(
    bin('azurite-blob'),
    ['-l', dir, '--blobHost', '127.0.0.1', '--blobPort', String(port), '--skipApiVersionCheck', '--silent'],
    { reject: false, buffer: false },
  );
  const s = running(child, dir, `http://127.0.0.1:${port}/devstoreaccount1`);
  await waitFor(`http://127.0.0.1:${port}/`, child, 'azurite');
  const key = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==';
  return {
    ...s,
    connectionString: `DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=${key};BlobEndpoint=${s.url};`,
  };
}

/**
 * Debian's docker-registry (distribution 2.8), filesystem storage, deletes enabled; no auth, or with
 * `basic` htpasswd auth for one user (a bcrypt hash made by Python's crypt, which Glance's Python
 * brings; cost 4, so each request's check is cheap).
 */
export async function startRegistry(basic?: {
  user: string;
  password: string;
}): Promise<RunningServer & { host: string }> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-registry-'));
  const port = await freePort();
  const config = path.join(dir, 'config.yml');
  let auth = '';
  if (basic) {
    const { stdout } = await execa('python3', [
      '-W',
      'ignore',
      '-c',
      'import crypt, sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)))',
      basic.password,
    ]);
    writeFileSync(path.join(dir, 'htpasswd'), `${basic.user}:${stdout.trim()}\n`);
    auth = `auth:\n  htpasswd: { realm: kiln-test, path: ${path.join(dir, 'htpasswd')} }\n`;
  }
  writeFileSync(
    config,
    `version: 0.1
log: { level: warn }
storage:
  filesystem: { rootdirectory: ${path.join(dir, 'data')} }
  delete: { enabled: true }
${auth}http:
  addr: 127.0.0.1:${port}
`,
  );
  const child = execa('docker-registry', ['serve', config], { reject: false, buffer: false });
  const s = running(child, dir, `http://127.0.0.1:${port}`);
  await waitFor(`${s.url}/v2/`, child, 'docker-registry');
  return { ...s, host: `127.0.0.1:${port}` };
}

/** Debian's glance-api with sqlite and the file store, no Keystone (the unauthenticated-context pipeline). */
export async function startGlance(): Promise<RunningServer> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-glance-'));
  const port = await freePort();
  for (const d of ['images', 'staging', 'tasks', 'lock']) mkdirSync(path.join(dir, d));
  const conf = path.join(dir, 'glance-api.conf');
  writeFileSync(
    conf,
    `[DEFAULT]
bind_host = 127.0.0.1
bind_port = ${port}
workers = 1
lock_path = ${path.join(dir, 'lock')}
log_file = ${path.join(dir, 'glance.log')}
enabled_backends = fs:file
[database]
connection = sqlite:///${path.join(dir, 'glance.sqlite')}
[glance_store]
default_backend = fs
[fs]
filesystem_store_datadir = ${path.join(dir, 'images')}/
[os_glance_staging_store]
filesystem_store_datadir = ${path.join(dir, 'staging')}/
[os_glance_tasks_store]
filesystem_store_datadir = ${path.join(dir, 'tasks')}/
[paste_deploy]
flavor =
[oslo_concurrency]
lock_path = ${path.join(dir, 'lock')}
[oslo_policy]
enforce_new_defaults = false
enforce_scope = false
`,
  );
  await execa('glance-manage', ['--config-file', conf, 'db_sync'], { cwd: dir });
  const child = execa('glance-api', ['--config-file', conf], { reject: false, buffer: false, cwd: dir });
  const s = running(child, dir, `http://127.0.0.1:${port}`);
  await waitFor(`${s.url}/versions`, child, 'glance-api', 90_000);
  return s;
}

/**
 * Debian's Swift as a single node with the s3api middleware (the S3 API Swift clusters offer): an
 * account, container and object server on one device in a temp directory (rings of one replica),
 * and a proxy with s3api, tempauth (S3 access key `test:tester`, secret `testing`) and SLO, which
 * s3api's multipart uploads are built on, plus the memcached s3api needs for them. Unlike s3rver it
 * implements AbortMultipartUpload and ListMultipartUploads, so a test can show no parts are left.
 * Swift 2.30's s3api ignores x-amz-checksum-* headers (a wrong ChecksumSHA256 is accepted).
 */
export async function startSwift(): Promise<RunningServer & { accessKeyId: string; secretAccessKey: string }> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-swift-'));
  mkdirSync(path.join(dir, 'srv', 'd1'), { recursive: true });
  const [proxy, memcache, ...ports] = await Promise.all([freePort(), freePort(), freePort(), freePort(), freePort()]);
  const servers = ['account', 'container', 'object'] as const;
  writeFileSync(
    path.join(dir, 'swift.conf'),
    '[swift-hash]\nswift_hash_path_suffix = kiln-test\nswift_hash_path_prefix = kiln-test\n[storage-policy:0]\nname = gold\ndefault = yes\n',
  );
  await Promise.all(
    servers.map(async (n, i) => {
      const builder = path.join(dir, `${n}.builder`);
      await execa('swift-ring-builder', [builder, 'create', '0', '1', '1']);
      await execa('swift-ring-builder', [builder, 'add', `r1z1-127.0.0.1:${ports[i]}/d1`, '1']);
      // Exit 1 is "warning" (e.g. balance); the ring file is what counts.
      await execa('swift-ring-builder', [builder, 'rebalance'], { reject: false });
      writeFileSync(
        path.join(dir, `${n}.conf`),
        `[DEFAULT]\nbind_ip = 127.0.0.1\nbind_port = ${ports[i]}\nworkers = 0\ndevices = ${path.join(dir, 'srv')}\nmount_check = false\nswift_dir = ${dir}\n[pipeline:main]\npipeline = ${n}-server\n[app:${n}-server]\nuse = egg:swift#${n}\n`,
      );
    }),
  );
  writeFileSync(
    path.join(dir, 'proxy.conf'),
    `[DEFAULT]
bind_ip = 127.0.0.1
bind_port = ${proxy}
workers = 0
swift_dir = ${dir}
[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats s3api tempauth copy slo dlo proxy-logging proxy-server
[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
[filter:catch_errors]
use = egg:swift#catch_errors
[filter:gatekeeper]
use = egg:swift#gatekeeper
[filter:healthcheck]
use = egg:swift#healthcheck
[filter:proxy-logging]
use = egg:swift#proxy_logging
[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:${memcache}
[filter:listing_formats]
use = egg:swift#listing_formats
[filter:s3api]
use = egg:swift#s3api
[filter:tempauth]
use = egg:swift#tempauth
user_test_tester = testing .admin
[filter:copy]
use = egg:swift#copy
[filter:slo]
use = egg:swift#slo
[filter:dlo]
use = egg:swift#dlo
`,
  );
  const children = [
    execa(
      'memcached',
      ['-l', '127.0.0.1', '-p', String(memcache), '-m', '16', ...(process.getuid?.() === 0 ? ['-u', 'root'] : [])],
      { reject: false, buffer: false },
    ),
    ...servers.map((n) => execa(`swift-${n}-server`, [path.join(dir, `${n}.conf`)], { reject: false, buffer: false })),
  ];
  const proxyChild = execa('swift-proxy-server', [path.join(dir, 'proxy.conf')], { reject: false, buffer: false });
  const s = running(proxyChild, dir, `http://127.0.0.1:${proxy}`);
  const stopAll = async () => {
    for (const c of children) c.kill('SIGTERM');
    await s.stop();
    await Promise.all(children.map((c) => c.catch(() => undefined)));
  };
  try {
    await waitFor(`${s.url}/healthcheck`, proxyChild, 'swift-proxy-server', 120_000, (st) => st === 200);
    // The backend servers answer too (a proxy up before them would fail the first requests).
    await Promise.all(
      servers.map((n, i) =>
        waitFor(`http://127.0.0.1:${ports[i]}/healthcheck`, children[i + 1]!, `swift-${n}-server`, 120_000),
      ),
    );
  } catch (e) {
    await stopAll();
    throw e;
  }
  return { ...s, stop: stopAll, accessKeyId: 'test:tester', secretAccessKey: 'testing' };
}

/**
 * One air-gapped build run's proxy: recording into a template's recording, or replaying a bundle's
 * recorded set (or an empty set: --offline without a bundle). It hands the build the guest network
 * settings (BuildOptions.airgap) and reports misses at once, so the caller can fail the build naming
 * the URL instead of waiting for the guest to time out.
 */
import { PackageProxy } from './proxy.js';
import { PackageStore } from './store.js';
import { beginRecording, finishRecording, type RecordingStatus } from './recording-status.js';

/** The guest's proxy address, forwarded to kiln's proxy by QEMU (guestfwd); the same when recording and offline. */
export const GUEST_PROXY = { ip: '10.0.2.100', port: 3128 } as const;
/** Offline, kiln's HTTP server (seeds, http_content) is at this guest address: guestfwd cannot use slirp's 10.0.2.2. */
export const OFFLINE_HTTP_IP = '10.0.2.101';
/** Where the guest finds kiln's HTTP server (slirp's host address, or OFFLINE_HTTP_IP): never through the proxy. */
export const KILN_GUEST_HOSTS = ['10.0.2.2', OFFLINE_HTTP_IP] as const;
/** The guest's no_proxy while recording or offline: loopback and kiln's HTTP server (${build.http_url}). */
export const GUEST_NO_PROXY = ['localhost', '127.0.0.1', ...KILN_GUEST_HOSTS].join(',');

export interface AirgapSessionOptions {
  mode: 'record' | 'replay';
  /** record: the recording directory; replay: the unpacked bundle's packages dir (absent: an empty set). */
  storeDir?: string;
  blobsDir?: string;
  offline: boolean;
  /** The build must stop with this error: a URL the bundle does not hold (AirgapMissError), HTTPS while recording (RecordingHttpsError). */
  onFatal: (error: Error) => void;
  log: (message: string, level: 'info' | 'warn') => void;
}

export interface AirgapSession {
  network: {
    proxyHostPort: number;
    guestProxy: { ip: string; port: number };
    offline: boolean;
    httpIp: string;
    replayed: () => { url: string; sha256: string }[];
  };
  proxy: PackageProxy;
  /**
   * Stops the proxy; recording, writes the index and then the run's status (`outcome`; none: not ok),
   * which kiln bundle reads to refuse a recording of a failed build.
   */
  close(outcome?: SessionOutcome): Promise<void>;
}

export type SessionOutcome = Omit<RecordingStatus, 'version' | 'finishedAt'>;

export async function startAirgapSession(o: AirgapSessionOptions): Promise<AirgapSession> {
  // A recording is one run's fetches, never merged with an earlier run's.
  if (o.mode === 'record' && o.storeDir) beginRecording(o.storeDir);
  const store = o.storeDir ? new PackageStore(o.storeDir, o.blobsDir) : new PackageStore('/nonexistent-kiln-empty-set');
  const proxy = new PackageProxy(o.mode, store, {
    onMiss: (url) => {
      o.log(`package proxy: ${url} is not in the recorded set`, 'warn');
      o.onFatal(new AirgapMissError(url));
    },
    onRefused: (what, why) => o.log(`package proxy refused ${what}: ${why}`, 'warn'),
    onFatal: (e) => o.onFatal(e),
    kilnHosts: [...KILN_GUEST_HOSTS],
  });
  const port = await proxy.listen('127.0.0.1');
  return {
    network: {
      proxyHostPort: port,
      guestProxy: { ...GUEST_PROXY },
      offline: o.offline,
      httpIp: OFFLINE_HTTP_IP,
      replayed: () => [...proxy.served],
    },
    proxy,
    close: async (outcome) => {
      await proxy.close();
      if (o.mode === 'record' && o.storeDir)
        finishRecording(
          o.storeDir,
          outcome ?? { ok: false, template: '', builds: [], stopped: 'the session closed without an outcome' },
        );
    },
  };
}

/** Why the build stopped: the guest asked for something the bundle does not hold. */
export class AirgapMissError extends Error {
  constructor(readonly url: string) {
    super(
      `the guest fetched ${url}, which the bundle's recorded package set does not hold\n  fix: record the build again on a connected machine (kiln build --record TEMPLATE), then write the bundle again (kiln bundle TEMPLATE -o FILE)`,
    );
  }
}

/**
 * Fetches that went around kiln's package proxy, read from what the guest printed. In a --record or
 * --offline build the guest's network is QEMU's restrict=on: it reaches kiln's proxy and HTTP server
 * and nothing else (no DNS; every other address refuses), so a program that ignored the proxy fails,
 * and says so in its own words. slirp does not report the connections it drops, so those words are
 * what kiln can name. A name that did not resolve always means such a fetch (no DNS at all in these
 * builds) and fails the build even when the command carried on (apt-get update only warns, then the
 * install fails with "Unable to locate package"); a refused connection may be a probe of a local
 * service, so it only explains a failure.
 */
/** A program saying it could not resolve a name (apt, curl, GNU and busybox wget, Python, dnf, git). */
const nameFailure =
  /Temporary failure (?:in name )?resol|Could not resolve|Couldn't resolve|unable to resolve host|Name or service not known|bad address '|No address associated with hostname/i;
/** A program saying a direct connection failed. */
const connectFailure =
  /Connection refused|can't connect to remote host|Failed to connect to|Network is unreachable|No route to host/i;
const keep = 5;

export function bypassFix(proxyUrl: string): string {
  return `  fix: fetch over http:// through the proxy: kiln sets http_proxy/https_proxy/no_proxy in /etc/environment and /etc/profile.d, apt's and dnf's proxy and sudo's env_keep; a program that ignores those (a direct address, busybox wget -Y off, its own configuration) must be given the proxy, e.g. wget -e use_proxy=yes -e http_proxy=${proxyUrl}, then record again`;
}

export class ProxyBypassWatch {
  readonly names: string[] = [];
  readonly connects: string[] = [];

  /** `proxyUrl` undefined: an ordinary build, nothing to watch. */
  constructor(private proxyUrl: string | undefined) {}

  observe(line: string): void {
    if (!this.proxyUrl) return;
    const l = line.trim().slice(0, 300);
    const into = nameFailure.test(l) ? this.names : connectFailure.test(l) ? this.connects : undefined;
    if (into && into.length < keep && !into.includes(l)) into.push(l);
  }

  private why(lines: string[]): string {
    return (
      `the guest tried to reach the network around kiln's package proxy:\n${lines.map((l) => `    ${l}`).join('\n')}\n` +
      `  in a --record or --offline build the guest reaches only kiln's proxy (${this.proxyUrl}) and kiln's HTTP server (names do not resolve, other addresses refuse), so what it fetched that way can be neither recorded nor replayed\n${bypassFix(this.proxyUrl!)}`
    );
  }

  /** For a failed provisioner's error: why, when its output shows a fetch around the proxy. */
  hint(): string {
    const lines = [...this.names, ...this.connects];
    return lines.length ? `\n${this.why(lines)}` : '';
  }

  /** Why a provisioner that succeeded fails all the same: it printed a name resolution failure. */
  failure(): string | undefined {
    return this.names.length ? this.why(this.names) : undefined;
  }
}

/** The same check over the serial console (cloud-init's packages:, systemd units): its lines that show a name resolution failure. */
export function nameFailures(text: string): string[] {
  const found: string[] = [];
  for (const line of text.split('\n')) {
    const l = line.trim().slice(0, 300);
    if (nameFailure.test(l) && !found.includes(l) && found.length < keep) found.push(l);
  }
  return found;
}

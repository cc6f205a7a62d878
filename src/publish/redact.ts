/**
 * What publish may record or print about a remote side: URLs without the credentials they can carry
 * (an Azure SAS token is the query string `?sv=...&sig=...`; `user:password@` is userinfo), and a
 * server's own text made safe to show (no escape sequences or line breaks, bounded, quoted and marked
 * as the server's, so a body holding "\n  fix: ..." cannot pass for kiln's advice).
 */

/** The URL with its userinfo, query and fragment removed; anything unparsable is cut at `?`/`#`. */
export function safeUrl(url: string): string {
  try {
    const u = new URL(url);
    // Left as written when there is nothing to remove (toString would re-encode a key's characters).
    if (!u.username && !u.password && !u.search && !u.hash && !url.includes('?') && !url.includes('#')) return url;
    u.username = '';
    u.password = '';
    u.search = '';
    u.hash = '';
    return u.toString();
  } catch {
    return url.replace(/[?#].*$/s, '').replace(/\/\/[^/@\s]*@/, '//');
  }
}

/** Every http(s) URL inside free text (an SDK's error message, a log line) passed through safeUrl. */
export function scrubUrls(text: string): string {
  return text.replace(/\bhttps?:\/\/[^\s"'<>`]+/gi, (m) => {
    // Keep punctuation that ends a sentence out of the URL.
    const tail = /[),.;:]+$/.exec(m)?.[0] ?? '';
    return safeUrl(m.slice(0, m.length - tail.length)) + tail;
  });
}

// CSI/OSC/other ESC sequences, then any remaining C0/C1 control character (line breaks included).
const escapes = /\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])/g;
const controls = /[\x00-\x1f\x7f-\x9f]+/g;

/**
 * A server's text as `the server said: "..."`: escape sequences and control characters removed (line
 * breaks become spaces), whitespace collapsed, at most `max` characters, URLs scrubbed, and quoted as
 * JSON so it stays on one line. Empty text gives ''.
 */
export function serverSaid(text: string, max = 200): string {
  const clean = scrubUrls(text.replace(escapes, '').replace(controls, ' ').replace(/\s+/g, ' ').trim());
  if (!clean) return '';
  const cut = clean.length > max ? `${clean.slice(0, max)}…` : clean;
  return `the server said: ${JSON.stringify(cut)}`;
}

/** True for a host (name or address, with or without port) that never leaves this machine. */
export function isLoopbackHost(host: string): boolean {
  const bracketed = /^\[([^\]]+)\]/.exec(host);
  // host:port has one colon; a bare IPv6 address has several.
  const h = (bracketed ? bracketed[1]! : host.split(':').length === 2 ? host.replace(/:\d+$/, '') : host).toLowerCase();
  if (h === 'localhost' || h.endsWith('.localhost')) return true;
  if (/^127\.\d+\.\d+\.\d+$/.test(h)) return true;
  return h === '::1' || h === '0:0:0:0:0:0:0:1';
}

/**
 * The warning for a credential about to go over plain http to another machine, or undefined when it
 * stays encrypted (https) or on this machine (loopback: nothing crosses a network, so no warning).
 */
export function cleartextWarning(url: string, what: string): string | undefined {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return undefined;
  }
  if (u.protocol !== 'http:' || isLoopbackHost(u.hostname)) return undefined;
  return `${what} goes in clear over plain http to ${u.host} (${safeUrl(url)}): anyone on the network path can read it\n  fix: use an https:// endpoint`;
}

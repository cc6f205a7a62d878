/**
 * The two URL tests kiln needs, one place each: what kiln downloads (http/https — base images, ISOs,
 * checksum files) and what is a URL of any scheme rather than a path (kept as written when paths are
 * made absolute or relative).
 */
export const isHttpUrl = (s: string): boolean => /^https?:\/\//.test(s);
export const hasUrlScheme = (s: string): boolean => /^[a-z][a-z0-9+.-]*:\/\//i.test(s);

/**
 * The guest's package inventory as the package-list step reads it (dpkg or rpm), and what the SBOM
 * writers make of it: package URLs (purl) and licences as SPDX expressions.
 */

export interface GuestPackage {
  name: string;
  version: string;
  arch: string;
  /**
   * What the package states about its licence: dpkg, each `License:` of its machine-readable
   * /usr/share/doc/<name>/copyright (Debian short names, e.g. "GPL-2+", "Expat"); rpm, its LICENSE tag.
   */
  licenses?: string[];
}

export interface GuestPackages {
  manager: 'dpkg' | 'rpm' | 'none';
  packages: GuestPackage[];
  /** /etc/os-release's ID and VERSION_ID (the purl's namespace and distro qualifier). */
  os?: { id: string; versionId?: string };
  /** When the list was read, and by which kiln: a build converted from the cache shows its producer's. */
  recordedAt?: string;
  kilnVersion?: string;
}

/** Package URL (github.com/package-url/purl-spec): pkg:deb/debian/jq@1.6-2.1?arch=amd64&distro=debian-12. */
export function purlOf(manager: 'dpkg' | 'rpm', p: GuestPackage, os?: GuestPackages['os']): string {
  const type = manager === 'dpkg' ? 'deb' : 'rpm';
  const namespace = os?.id ? `${encodeURIComponent(os.id.toLowerCase())}/` : '';
  // Qualifiers sorted by key, as the spec's canonical form wants.
  const qualifiers = [
    ...(p.arch ? [`arch=${encodeURIComponent(p.arch)}`] : []),
    ...(os?.id ? [`distro=${encodeURIComponent(os.versionId ? `${os.id}-${os.versionId}` : os.id)}`] : []),
  ];
  return `pkg:${type}/${namespace}${encodeURIComponent(p.name)}@${encodeURIComponent(p.version)}${qualifiers.length ? `?${qualifiers.join('&')}` : ''}`;
}

/**
 * Debian's copyright-format short names (and the usual rpm LICENSE words) that have an SPDX identifier.
 * Only identifiers the CycloneDX 1.5 schema lists, so both formats accept every one. Anything else is
 * kept as a LicenseRef (SPDX) or a named licence (CycloneDX): never guessed.
 */
const SPDX_OF: Readonly<Record<string, string>> = Object.fromEntries(
  Object.entries({
    'GPL-1': 'GPL-1.0-only',
    'GPL-1+': 'GPL-1.0-or-later',
    'GPL-2': 'GPL-2.0-only',
    'GPL-2+': 'GPL-2.0-or-later',
    'GPL-3': 'GPL-3.0-only',
    'GPL-3+': 'GPL-3.0-or-later',
    GPLv2: 'GPL-2.0-only',
    'GPLv2+': 'GPL-2.0-or-later',
    GPLv3: 'GPL-3.0-only',
    'GPLv3+': 'GPL-3.0-or-later',
    'LGPL-2': 'LGPL-2.0-only',
    'LGPL-2+': 'LGPL-2.0-or-later',
    'LGPL-2.1': 'LGPL-2.1-only',
    'LGPL-2.1+': 'LGPL-2.1-or-later',
    'LGPL-3': 'LGPL-3.0-only',
    'LGPL-3+': 'LGPL-3.0-or-later',
    'LGPLv2+': 'LGPL-2.0-or-later',
    'LGPLv2.1+': 'LGPL-2.1-or-later',
    'AGPL-3': 'AGPL-3.0-only',
    'AGPL-3+': 'AGPL-3.0-or-later',
    'GFDL-1.2': 'GFDL-1.2-only',
    'GFDL-1.2+': 'GFDL-1.2-or-later',
    'GFDL-1.3': 'GFDL-1.3-only',
    'GFDL-1.3+': 'GFDL-1.3-or-later',
    'Apache-2.0': 'Apache-2.0',
    'Apache-2': 'Apache-2.0',
    'ASL 2.0': 'Apache-2.0',
    Artistic: 'Artistic-1.0',
    'Artistic-1.0': 'Artistic-1.0',
    'Artistic-2.0': 'Artistic-2.0',
    'BSD-2-clause': 'BSD-2-Clause',
    'BSD-3-clause': 'BSD-3-Clause',
    'BSD-4-clause': 'BSD-4-Clause',
    BSD: 'BSD-3-Clause',
    Expat: 'MIT',
    MIT: 'MIT',
    X11: 'X11',
    ISC: 'ISC',
    Zlib: 'Zlib',
    curl: 'curl',
    OpenSSL: 'OpenSSL',
    SSLeay: 'OpenSSL',
    'MPL-1.1': 'MPL-1.1',
    'MPL-2.0': 'MPL-2.0',
    'CC0-1.0': 'CC0-1.0',
    CC0: 'CC0-1.0',
    'CC-BY-SA-3.0': 'CC-BY-SA-3.0',
    'CC-BY-4.0': 'CC-BY-4.0',
    'PSF-2': 'PSF-2.0',
    Python: 'Python-2.0',
    'Python-2.0': 'Python-2.0',
    FSFAP: 'FSFAP',
    FSFUL: 'FSFUL',
    FSFULLR: 'FSFULLR',
    'BSL-1.0': 'BSL-1.0',
    'Unicode-DFS-2016': 'Unicode-DFS-2016',
    WTFPL: 'WTFPL',
    Unlicense: 'Unlicense',
    'bzip2-1.0.6': 'bzip2-1.0.6',
    'OFL-1.1': 'OFL-1.1',
    'EPL-1.0': 'EPL-1.0',
    'EPL-2.0': 'EPL-2.0',
    Ruby: 'Ruby',
    'PHP-3.01': 'PHP-3.01',
    Vim: 'Vim',
    libpng: 'Libpng',
    'GPL-2.0+': 'GPL-2.0-or-later',
    'GPL-3.0+': 'GPL-3.0-or-later',
    'LGPL-2.0+': 'LGPL-2.0-or-later',
    'LGPL-3.0+': 'LGPL-3.0-or-later',
    'CC-BY-3.0': 'CC-BY-3.0',
    'CC-BY-SA-4.0': 'CC-BY-SA-4.0',
    '0BSD': '0BSD',
    'MIT-0': 'MIT-0',
    Sleepycat: 'Sleepycat',
    IJG: 'IJG',
    ICU: 'ICU',
    HPND: 'HPND',
    TCL: 'TCL',
    Latex2e: 'Latex2e',
    'LPPL-1.3c': 'LPPL-1.3c',
    'OLDAP-2.8': 'OLDAP-2.8',
    'GFDL-1.1+': 'GFDL-1.1-or-later',
    'MPL-1.0': 'MPL-1.0',
    'AFL-2.1': 'AFL-2.1',
    PostgreSQL: 'PostgreSQL',
    'BSD-1-clause': 'BSD-1-Clause',
    'Unicode-DFS-2015': 'Unicode-DFS-2015',
    NTP: 'NTP',
    Beerware: 'Beerware',
  }).flatMap(([k, v]) => [
    [k.toLowerCase(), v],
    [v.toLowerCase(), v],
  ]),
);

/** The SPDX identifier of one licence name, if it has one. */
export function spdxIdOf(name: string): string | undefined {
  return SPDX_OF[name.trim().toLowerCase()];
}

/** A name with no SPDX identifier, as an SPDX LicenseRef (letters, digits, "." and "-" only). */
export function licenseRefOf(name: string): string {
  return `LicenseRef-${
    name
      .trim()
      .replace(/\+/g, '-or-later')
      .replace(/[^A-Za-z0-9.-]+/g, '-')
      .replace(/^-+|-+$/g, '') || 'unnamed'
  }`;
}

/** One licence field ("GPL-2+ or Artistic", "GPL-2+ with OpenSSL exception") as an SPDX expression, and the LicenseRefs it uses. */
function fieldExpression(field: string, refs: Map<string, string>): string | undefined {
  const term = (t: string) => {
    const id = spdxIdOf(t);
    if (id) return id;
    const ref = licenseRefOf(t);
    refs.set(ref, t.trim());
    return ref;
  };
  const alternatives = field
    .replace(/[,;]+\s*$/, '')
    .split(/\s+or\s+|\s*\|\s*/i)
    .map((alt) => alt.trim())
    .filter(Boolean)
    .map((alt) =>
      alt
        .split(/,?\s+and\s+|\s*&\s*|,\s+/i)
        .map((t) => t.trim())
        .filter(Boolean)
        .map(term),
    );
  if (!alternatives.length) return undefined;
  const parts = alternatives.map((all) => (all.length > 1 ? `(${all.join(' AND ')})` : all[0]!));
  return parts.length > 1 ? parts.join(' OR ') : parts[0];
}

/**
 * A package's licences as one SPDX expression (each `License:` field it states, all of them: the
 * package holds files under each), with the LicenseRefs it uses and the names they stand for.
 * undefined when the package states none.
 */
export function spdxLicense(
  licenses: readonly string[] | undefined,
): { expression: string; refs: Map<string, string> } | undefined {
  const refs = new Map<string, string>();
  const fields = [
    ...new Set((licenses ?? []).map((l) => fieldExpression(l, refs)).filter((e): e is string => e !== undefined)),
  ];
  if (!fields.length) return undefined;
  const expression =
    fields.length === 1 ? fields[0]! : fields.map((f) => (/ OR /.test(f) ? `(${f})` : f)).join(' AND ');
  return { expression, refs };
}

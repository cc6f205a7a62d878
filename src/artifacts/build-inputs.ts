/**
 * Every local file a build read, by digest, for the SBOM (what kiln put into the guest: uploads, and
 * the scripts it ran there) and the provenance (all of it: template, base image or ISO, served and
 * attached files, scripts, uploads, playbooks and manifests).
 */
import { lstatSync, readdirSync, realpathSync, statSync } from 'node:fs';
import path from 'node:path';
import type { BuildConfig, Provisioner } from '../template/schema.js';
import { appliesTo, kindOf } from '../template/provisioner-kinds/index.js';
import { fileDigests } from '../cache/digest.js';

export interface InputFile {
  /** What it is to the build: "script", "upload", "http_directory", "cd_files", "floppy_files", "ansible"... */
  role: string;
  /** 1-based provisioner number, for scripts, uploads and playbooks. */
  provisioner?: number;
  hostPath: string;
  /** Where an upload lands in the guest (a script: remote_folder and its name; it is removed after it ran). */
  guestPath?: string;
  size: number;
  sha256: string;
  /** SPDX 2.3 requires a SHA-1 for every file it lists. */
  sha1: string;
}

/**
 * The regular files under `p` (itself if it is one), with their path relative to it. `follow`: links
 * inside are followed and version-control folders left out (what Ansible, Puppet and the layer key
 * read); otherwise as an upload walks a folder: links inside left out, everything else sent.
 */
function filesUnder(
  p: string,
  follow: boolean,
  seen: Set<string> = new Set(),
  top = true,
): { abs: string; rel: string }[] {
  const st = follow || top ? statSync(p, { throwIfNoEntry: false }) : lstatSync(p);
  if (!st) return [];
  if (st.isFile()) return [{ abs: p, rel: '' }];
  if (!st.isDirectory()) return [];
  const real = realpathSync(p);
  if (seen.has(real)) return [];
  seen.add(real);
  const out: { abs: string; rel: string }[] = [];
  for (const name of readdirSync(p).sort()) {
    if (follow && (name === '.git' || name === '.hg' || name === '.svn')) continue;
    for (const f of filesUnder(path.join(p, name), follow, seen, false))
      out.push({ abs: f.abs, rel: f.rel ? path.posix.join(name, f.rel) : name });
  }
  return out;
}

/** What a provisioner reads on the host, as its kind lists it (with where each file lands in the guest). */
function provisionerFiles(
  p: Provisioner,
): { role: string; host: string; guest?: (rel: string) => string; follow: boolean }[] {
  return kindOf(p)
    .hostInputs(p)
    .map((i) => ({ role: i.role, host: i.path, guest: i.guest, follow: i.follow }));
}

/**
 * The local inputs of a build, each file once per role (a directory is listed file by file). Output
 * directories are left out (a playbook folder may hold them).
 */
export async function buildInputFiles(build: BuildConfig): Promise<InputFile[]> {
  const wanted: {
    role: string;
    provisioner?: number;
    host: string;
    guest?: (rel: string) => string;
    follow: boolean;
  }[] = [];
  // Optional chaining: the unit tests' stub builds carry only some fields.
  const s = build.source as BuildConfig['source'] | undefined;
  if (s?.http_directory) wanted.push({ role: 'http_directory', host: s.http_directory, follow: true });
  for (const f of s?.cd_files ?? []) wanted.push({ role: 'cd_files', host: f, follow: true });
  for (const f of s?.floppy_files ?? []) wanted.push({ role: 'floppy_files', host: f, follow: true });
  for (const o of build.outputs ?? [])
    for (const f of o.include ?? []) wanted.push({ role: 'vagrant include', host: f, follow: true });
  (build.provisioners ?? []).forEach((p, i) => {
    if (!appliesTo(p, build.name)) return;
    for (const w of provisionerFiles(p)) wanted.push({ ...w, provisioner: i + 1 });
  });
  const outputs = [build.output_directory, ...(build.outputs ?? []).map((o) => o.directory)]
    .filter((d): d is string => d !== undefined)
    .map((d) => d + path.sep);
  const seen = new Set<string>();
  const files: InputFile[] = [];
  for (const w of wanted) {
    for (const f of filesUnder(w.host, w.follow)) {
      if (outputs.some((o) => f.abs.startsWith(o))) continue;
      const guestPath = w.guest?.(f.rel);
      const id = `${w.role}\0${w.provisioner}\0${f.abs}\0${guestPath}`;
      if (seen.has(id)) continue;
      seen.add(id);
      files.push({
        role: w.role,
        provisioner: w.provisioner,
        hostPath: f.abs,
        guestPath,
        size: statSync(f.abs).size,
        ...(await fileDigests(f.abs, ['sha256', 'sha1'])),
      });
    }
  }
  return files;
}

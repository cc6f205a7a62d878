/**
 * `kiln bundle --with-kiln`: kiln as one npm tarball with every production dependency inside
 * (bundleDependencies), their native parts (node-pty, ssh2's crypto, cpu-features) as built for this
 * platform, so `npm install -g ./kiln.tgz` needs no network. The bundled copies of packages with a
 * built native addon lose their install scripts: node-gyp would otherwise fetch Node's headers.
 */
import {
  cpSync,
  existsSync,
  realpathSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { packageRoot } from '../version.js';
import { KilnError } from '../util/errors.js';

interface PackageJson {
  name: string;
  version: string;
  scripts?: Record<string, string>;
  dependencies?: Record<string, string>;
  devDependencies?: Record<string, string>;
  bundleDependencies?: string[];
  files?: string[];
  gypfile?: boolean;
}

/** Packs kiln into `<cacheDir>/airgap/kiln-<version>.tgz` and returns its path. */
export async function packKiln(cacheDir: string, root = packageRoot): Promise<string> {
  const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as PackageJson;
  if (!existsSync(path.join(root, 'dist', 'cli', 'main.js')))
    throw new KilnError(`${root}/dist is not built`, { fix: `run make build (tsc) first` });
  const ls = await execa('npm', ['ls', '--omit=dev', '--all', '--parseable'], { cwd: root, reject: false });
  // npm may print real paths (node_modules can be a link): compare real paths.
  const modules = realpathSync(path.join(root, 'node_modules'));
  const deps = String(ls.stdout)
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
    .map((l) => realpathSync(l))
    .filter((l) => l.startsWith(modules + path.sep))
    .sort();
  if (!deps.length)
    throw new KilnError(`npm ls found no production dependencies under ${root}/node_modules`, {
      fix: `run make setup (npm ci) first`,
    });
  const work = path.join(cacheDir, 'airgap');
  mkdirSync(work, { recursive: true });
  const staging = mkdtempSync(path.join(work, 'pack-'));
  try {
    for (const f of pkg.files ?? ['bin', 'dist'])
      if (existsSync(path.join(root, f))) cpSync(path.join(root, f), path.join(staging, f), { recursive: true });
    for (const f of ['README.md', 'LICENSE'])
      if (existsSync(path.join(root, f))) cpSync(path.join(root, f), path.join(staging, f));
    for (const dep of deps) {
      const rel = path.join('node_modules', path.relative(modules, dep));
      // Nested node_modules are listed (and copied) as dependencies of their own.
      cpSync(dep, path.join(staging, rel), {
        recursive: true,
        filter: (src) => src === dep || path.relative(dep, src).split(path.sep)[0] !== 'node_modules',
      });
      const depPkgFile = path.join(staging, rel, 'package.json');
      const depPkg = JSON.parse(readFileSync(depPkgFile, 'utf8')) as PackageJson;
      const native = existsSync(path.join(dep, 'binding.gyp')) || depPkg.gypfile;
      if (native && existsSync(path.join(dep, 'build', 'Release'))) {
        for (const s of ['preinstall', 'install', 'postinstall']) delete depPkg.scripts?.[s];
        depPkg.gypfile = false;
        // npm pack applies a bundled package's own "files"/.npmignore, which leave build/ out.
        delete depPkg.files;
        rmSync(path.join(staging, rel, '.npmignore'), { force: true });
        writeFileSync(depPkgFile, JSON.stringify(depPkg, null, 2) + '\n');
      }
    }
    const packed: PackageJson = { ...pkg, bundleDependencies: Object.keys(pkg.dependencies ?? {}).sort() };
    delete packed.devDependencies;
    packed.scripts = {};
    writeFileSync(path.join(staging, 'package.json'), JSON.stringify(packed, null, 2) + '\n');
    const r = await execa('npm', ['pack', '--json', '--pack-destination', work], {
      cwd: staging,
      reject: false,
      all: true,
    });
    if (r.failed) throw new Error(`npm pack failed: ${String(r.all).trim().slice(-2000)}`);
    const name = (JSON.parse(String(r.stdout)) as { filename: string }[])[0]!.filename;
    const out = path.join(work, `kiln-${pkg.version}.tgz`);
    renameSync(path.join(work, name), out);
    return out;
  } finally {
    rmSync(staging, { recursive: true, force: true });
  }
}

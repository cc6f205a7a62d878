/**
 * kiln's layering, checked by `make lint-layers` (part of `make test`). Imports point down only:
 *
 *   cli                                  argv, signals, prompts, rendering, environment variables
 *    └ index.ts                          the public library API
 *     └ scale                            kiln plan, CI matrices, Slurm run directories (above the build it plans and runs)
 *       └ build                          build(), the runner, the typed state, steps/ (one per file)
 *          └ provisioners publish airgap   what a build runs in the guest / where images go / offline bundles
 *             └ artifacts                manifest, packaging (OVA, box, GCE), verify
 *                └ cache                 downloads, digests, layer keys and store, locks
 *                   └ communicator qemu http template ui cloudinit bootcommand   (base)
 *                      └ util, version.ts                                         (no kiln imports)
 *
 * Type-only imports count like any other: a lower layer that needs a higher layer's types gets its
 * own narrower interface (provisioners/context.ts's ProvisionerContext, artifacts/manifest.ts's
 * ManifestSource), which the higher layer's object satisfies.
 */
const layer = {
  cli: '^src/cli/',
  api: '^src/index[.]ts$',
  scale: '^src/scale/',
  build: '^src/build/',
  provisioners: '^src/provisioners/',
  publish: '^src/publish/',
  airgap: '^src/airgap/',
  artifacts: '^src/artifacts/',
  cache: '^src/cache/',
  base: '^src/(communicator|qemu|http|template|ui|cloudinit|bootcommand)/',
  util: '^src/(util/|version[.]ts$)',
};
const below = (name, ...higher) => ({
  name: `${name}-imports-down`,
  comment: `${name} is below ${higher.join(', ')}: it may not import them (move the shared piece down instead)`,
  severity: 'error',
  from: { path: layer[name] },
  to: { path: higher.map((h) => layer[h]) },
});

module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      comment: 'a cycle of run-time imports makes the load order fragile (a cycle through type-only imports, e.g. schema.ts and its split-out parts, is harmless)',
      severity: 'error',
      from: { path: '^src/' },
      to: { circular: true, viaOnly: { dependencyTypesNot: ['type-only'] } },
    },
    below('api', 'cli'),
    below('scale', 'cli', 'api'),
    below('build', 'cli', 'api', 'scale'),
    below('provisioners', 'cli', 'api', 'scale', 'build', 'publish', 'airgap'),
    below('publish', 'cli', 'api', 'scale', 'build', 'provisioners', 'airgap'),
    below('airgap', 'cli', 'api', 'scale', 'build', 'provisioners', 'publish'),
    below('artifacts', 'cli', 'api', 'scale', 'build', 'provisioners', 'publish', 'airgap'),
    below('cache', 'cli', 'api', 'scale', 'build', 'provisioners', 'publish', 'airgap', 'artifacts'),
    below('base', 'cli', 'api', 'scale', 'build', 'provisioners', 'publish', 'airgap', 'artifacts', 'cache'),
    {
      name: 'util-imports-nothing-of-kiln',
      comment: 'util/ and version.ts are the bottom: they import only node and npm modules, and each other',
      severity: 'error',
      from: { path: layer.util },
      to: { path: '^src/', pathNot: layer.util },
    },
    {
      name: 'no-step-imports-a-step',
      comment: 'a step is one file with its run and cleanup; helpers two steps share go down (build/, qemu/, util/...), steps/index.ts lists them',
      severity: 'error',
      from: { path: '^src/build/steps/', pathNot: '^src/build/steps/index[.]ts$' },
      to: { path: '^src/build/steps/' },
    },
    {
      name: 'only-the-build-entry-imports-steps',
      comment: 'the steps are reached through steps/index.ts by build.ts (and the step tests)',
      severity: 'error',
      from: { path: '^src/', pathNot: ['^src/build/steps/', '^src/build/build[.]ts$'] },
      to: { path: '^src/build/steps/' },
    },
    {
      name: 'every-module-in-a-layer',
      comment: 'a new folder under src/ gets its place in the layers here (and in docs/architecture.md)',
      severity: 'error',
      from: { path: '^src/', pathNot: Object.values(layer) },
      to: {},
    },
    {
      name: 'not-to-unresolvable',
      severity: 'error',
      from: { path: '^src/' },
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(dist|node_modules)/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { exportsFields: ['exports'], conditionNames: ['import', 'require', 'node', 'default', 'types'], extensions: ['.ts', '.js', '.d.ts'] },
    moduleSystems: ['es6', 'cjs'],
  },
};

// `kata-ctl install`: puts the shim and kata-ctl on PATH, the default configuration and the guest image in
// Kata's standard paths, so containerd finds `io.containerd.kata.v2` with no further set-up.
import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';

export interface InstallOptions {
  /** Where the repo's built tree is (dist/, node_modules/koffi, config/, build/guest). */
  sourceDir: string;
  prefix: string;
  libDir: string;
  configPath: string;
  imageDir: string;
  /** A guest image dir already built (kernel, initrd, manifest); copied to imageDir. */
  guestDir: string;
}

const EXECUTABLES = ['containerd-shim-kata-v2', 'kata-ctl'];

export function install(o: InstallOptions, say: (line: string) => void = () => {}): void {
  const need = (p: string, what: string) => {
    if (!fs.existsSync(p))
      throw new Error(`install: ${what} is missing at ${p} (run scripts/setup.sh first)`);
  };
  for (const exe of EXECUTABLES) need(path.join(o.sourceDir, 'dist', `${exe}.mjs`), `the ${exe} bundle`);
  need(path.join(o.guestDir, 'manifest.json'), 'the guest image');
  need(path.join(o.sourceDir, 'config', 'configuration-qemu.toml'), 'the default configuration');

  // Bundles plus the one native dependency they load at run time.
  fs.mkdirSync(path.join(o.libDir, 'dist'), { recursive: true });
  for (const f of fs.readdirSync(path.join(o.sourceDir, 'dist'))) {
    if (f.endsWith('.mjs') || f.endsWith('.mjs.map'))
      fs.copyFileSync(path.join(o.sourceDir, 'dist', f), path.join(o.libDir, 'dist', f));
  }
  const koffi = path.join(o.sourceDir, 'node_modules', 'koffi');
  if (fs.existsSync(koffi))
    fs.cpSync(koffi, path.join(o.libDir, 'node_modules', 'koffi'), { recursive: true, dereference: true });
  fs.mkdirSync(path.join(o.prefix, 'bin'), { recursive: true });
  for (const exe of EXECUTABLES) {
    const target = path.join(o.prefix, 'bin', exe);
    const tmp = `${target}.tmp`;
    fs.writeFileSync(tmp, `#!/bin/sh\nexec node ${path.join(o.libDir, 'dist', `${exe}.mjs`)} "$@"\n`, {
      mode: 0o755,
    });
    fs.renameSync(tmp, target);
    say(`installed ${target}`);
  }

  fs.mkdirSync(path.dirname(o.configPath), { recursive: true });
  fs.copyFileSync(path.join(o.sourceDir, 'config', 'configuration-qemu.toml'), o.configPath);
  say(`installed ${o.configPath}`);

  if (path.resolve(o.guestDir) !== path.resolve(o.imageDir)) {
    fs.mkdirSync(o.imageDir, { recursive: true });
    for (const f of fs.readdirSync(o.guestDir)) {
      const src = path.join(o.guestDir, f);
      const dst = path.join(o.imageDir, f);
      const st = fs.lstatSync(src);
      fs.rmSync(dst, { force: true });
      if (st.isSymbolicLink()) fs.symlinkSync(fs.readlinkSync(src), dst);
      else if (st.isFile()) fs.copyFileSync(src, dst);
    }
    say(`installed the guest image in ${o.imageDir}`);
  }
}

export function registerInstall(program: Command, sourceDir: string): void {
  program
    .command('install')
    .description("install the shim, kata-ctl, the default configuration and the guest image in Kata's paths")
    .option('--prefix <dir>', 'where bin/ goes', '/usr/local')
    .option('--lib-dir <dir>', 'where the bundles go', '/usr/local/lib/kata-ts')
    .option(
      '--config <file>',
      'default configuration path',
      '/usr/share/defaults/kata-containers/configuration.toml',
    )
    .option('--image-dir <dir>', 'guest image destination', '/usr/share/kata-containers')
    .option('--guest-dir <dir>', 'the built guest image', path.join(sourceDir, 'build', 'guest'))
    .action(
      (opts: { prefix: string; libDir: string; config: string; imageDir: string; guestDir: string }) => {
        install(
          {
            sourceDir,
            prefix: opts.prefix,
            libDir: opts.libDir,
            configPath: opts.config,
            imageDir: opts.imageDir,
            guestDir: opts.guestDir,
          },
          (l) => process.stderr.write(`${l}\n`),
        );
      },
    );
}

// qemu_args may add to kiln's QEMU command line, never take away the controls kiln steers the VM
// with (QMP, the serial console, the user network with the SSH forward, QEMU as a child that exits
// on power-off). Each refusal names the switch, why kiln needs what it takes, and what to write.
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadTemplate } from '../../../src/template/load.js';
import { TemplateError } from '../../../src/template/errors.js';
import { qemuArgsProblems } from '../../../src/template/qemu-args.js';
import { tempDirMaker } from '../../helpers/temp-dirs.js';

/** A fresh folder in the system temp dir, removed after the file's tests. */
const tempDir = tempDirMaker();

const problemsOf = (args: string[][]) => qemuArgsProblems(args, ['qemu_args'], 22);

describe("qemu_args that take kiln's controls away", () => {
  const refused: [string[][], RegExp, RegExp][] = [
    [
      [['-qmp', 'tcp:0.0.0.0:4444,server=on,wait=off']],
      /kiln talks to QEMU over its own QMP socket.*open the VM's control socket to the network/,
      /remove it/,
    ],
    [
      [['-qmp', 'unix:/tmp/q.sock,server=on,wait=off']],
      /in a private directory; this switch would replace it$/,
      /--on-error=abort/,
    ],
    [[['-qmp-pretty', 'tcp:127.0.0.1:4444']], /QMP socket/, /remove it/],
    [[['-mon', 'chardev=mon0,mode=control']], /second monitor beside kiln's QMP socket/, /remove it/],
    [[['-monitor', 'stdio']], /monitor off \(-monitor none\)/, /remove it/],
    [[['-serial', 'stdio']], /first serial port is kiln's console/, /-chardev.*isa-serial,chardev=extra0/],
    [
      [['-chardev', 'socket,id=serial0,path=/tmp/s']],
      /claims the id serial0, which is kiln's serial console/,
      /another id/,
    ],
    [[['-chardev', 'id=compat_monitor0,backend=null']], /kiln's QMP socket/, /another id/],
    [[['-nographic']], /serial port and the monitor to kiln's own standard input/, /headless: true/],
    [[['-daemonize']], /forks QEMU into the background/, /own child process/],
    [[['-pidfile', '/tmp/qemu.pid']], /writes and locks a file/, /remove it/],
    [[['-S']], /freezes the CPU.*communicator\.timeout/, /remove it/],
    [[['-incoming', 'defer']], /migration stream/, /base_image or iso/],
    [[['-no-shutdown']], /kiln knows the disk is complete only when QEMU exits/, /remove it/],
    [[['-nic', 'none']], /without a network.*SSH.*port 22/, /communicator: \{ type: none \}/],
    [[['-net', 'none']], /without a network/, /remove it/],
    [
      [['-netdev', 'user,id=net0,hostfwd=tcp::2222-:22']],
      /claims the id net0, kiln's own network/,
      /id=net1.*virtio-net-pci,netdev=net1/,
    ],
    [[['-netdev', 'id=net0,type=user']], /claims the id net0/, /id=net1/],
    [[['-nic', 'user,id=net0']], /claims the id net0/, /\[-nic, "user,id=net1"\]/],
    [[['-device', 'e1000,netdev=net0']], /second card into kiln's network/, /netdev=net1/],
    [[['-device', 'isa-serial,chardev=serial0']], /chardev of kiln's serial console/, /chardev=extra0/],
  ];
  it.each(refused)('refuses %j', (args, why, fix) => {
    const problems = problemsOf(args);
    expect(problems).toHaveLength(1);
    expect(problems[0]!.path).toEqual(['qemu_args', 0]);
    expect(problems[0]!.message.startsWith(`${args[0]!.join(' ')}: `), problems[0]!.message).toBe(true);
    expect(problems[0]!.message).toMatch(why);
    expect(problems[0]!.fix).toMatch(fix);
  });

  it('reads the switches as QEMU does: --foo is -foo, and a group may hold several switches', () => {
    expect(problemsOf([['--qmp', 'tcp::4444']])[0]!.message).toMatch(/^--qmp tcp::4444: .*network/);
    expect(problemsOf([['--S']])[0]!.message).toMatch(/^--S: it freezes the CPU/);
    const grouped = problemsOf([
      ['-cpu', 'max'],
      ['-smp', '4', '-S'],
    ]);
    expect(grouped.map((p) => p.path)).toEqual([['qemu_args', 1]]);
    // A switch and its value may sit in separate groups.
    expect(problemsOf([['-serial'], ['stdio']]).map((p) => p.path)).toEqual([['qemu_args', 0]]);
    // A word in a value's place is a value, even when it looks like a switch.
    expect(
      problemsOf([
        ['-append', '-S'],
        ['-name', '-nographic'],
      ]),
    ).toEqual([]);
  });

  it('refuses -switch=value, which QEMU stops at with "invalid option"', () => {
    const [p] = problemsOf([['-m=2048']]);
    expect(p!.message).toBe('QEMU has no -m=2048 spelling: it stops with "invalid option"');
    expect(p!.fix).toBe('write the switch and its value as two items: ["-m", "2048"]');
    expect(problemsOf([['--qmp=tcp::4444,server=on']])[0]!.fix).toContain('["-qmp", "tcp::4444,server=on"]');
  });

  it("names the guest's SSH port that the user network forwards to", () => {
    expect(qemuArgsProblems([['-nic', 'none']], [], 2222)[0]!.message).toContain("the guest's port 2222");
  });

  it('accepts switches that only add: a second network or serial port with ids of their own, CPU and device options', () => {
    expect(
      problemsOf([
        ['-cpu', 'qemu64'],
        ['-smp', '4'],
        ['-m', '2048'],
        ['-machine', 'q35'],
        ['-display', 'none'],
        ['-nic', 'user,model=e1000'],
        ['-netdev', 'user,id=net1'],
        ['-device', 'virtio-net-pci,netdev=net1'],
        ['-net', 'nic'],
        ['-chardev', 'file,id=extra0,path=/tmp/extra0.log'],
        ['-device', 'isa-serial,chardev=extra0'],
        ['-chardev', 'socket,id=serial0x,path=/tmp/s'],
        ['-device', 'virtio-rng-pci'],
        ['-no-reboot'],
        ['-snapshot'],
      ]),
    ).toEqual([]);
  });

  it('is part of loading: the problem has the file, line, field and fix', () => {
    const dir = tempDir('kiln-validate-qemu-');
    writeFileSync(path.join(dir, 'base.qcow2'), 'x');
    const file = path.join(dir, 't.yaml');
    writeFileSync(
      file,
      'builds:\n  - name: q\n    source:\n      base_image: base.qcow2\n      checksum: none\n      qemu_args:\n        - [-cpu, max]\n        - [-monitor, "tcp:0.0.0.0:5555,server,nowait"]\n',
    );
    let message = '';
    try {
      loadTemplate(file);
    } catch (e) {
      if (e instanceof TemplateError) message = e.message;
      else throw e;
    }
    expect(message).toContain(
      `${file}:8: builds[0].source.qemu_args[1]: -monitor tcp:0.0.0.0:5555,server,nowait: kiln turns QEMU's human monitor off`,
    );
    expect(message).toContain('\n  fix: remove it');
  });

  it("refuses SMBIOS type 1 fields when the seed URL goes in kiln's type 1 table (delivery http), accepts them with a cidata ISO, asked for or kiln's choice", () => {
    const dir = tempDir('kiln-validate-qemu-');
    writeFileSync(path.join(dir, 'base.qcow2'), 'x');
    const file = path.join(dir, 't.yaml');
    const template = (cloudInit: string) =>
      `builds:\n  - name: q\n    source:\n      base_image: base.qcow2\n      checksum: none\n${cloudInit}      qemu_args:\n        - [-cpu, max]\n        - [-smbios, "type=1,serial=ABC"]\n`;
    writeFileSync(file, template('      cloud_init: { delivery: http }\n'));
    let message = '';
    try {
      loadTemplate(file);
    } catch (e) {
      if (e instanceof TemplateError) message = e.message;
      else throw e;
    }
    expect(message).toContain(
      `${file}:9: builds[0].source.qemu_args[1]: -smbios type=1,serial=ABC sets SMBIOS type 1 fields`,
    );
    expect(message).toContain('\n  fix: set cloud_init: { delivery: cdrom }, or drop that -smbios switch');
    for (const cloudInit of ['      cloud_init: { delivery: cdrom }\n', '']) {
      writeFileSync(file, template(cloudInit));
      expect(loadTemplate(file).template.builds[0]!.source.qemu_args).toEqual([
        ['-cpu', 'max'],
        ['-smbios', 'type=1,serial=ABC'],
      ]);
    }
  });

  it("takes qemu_args_replace (Packer's rule) with ${build.disk} and ${build.iso} naming kiln's disk and ISO; a misspelt one is named", () => {
    const dir = tempDir('kiln-validate-qemu-');
    writeFileSync(path.join(dir, 'base.qcow2'), 'x');
    const file = path.join(dir, 't.yaml');
    const template = (disk: string) =>
      `builds:\n  - name: q\n    source:\n      base_image: base.qcow2\n      checksum: none\n      qemu_args_replace: true\n      qemu_args:\n        - [-device, "virtio-scsi-pci,id=scsi0"]\n        - [-drive, "if=none,id=d0,file=\${build.${disk}}"]\n        - [-device, "scsi-hd,drive=d0"]\n`;
    writeFileSync(file, template('disk'));
    const s = loadTemplate(file).template.builds[0]!.source;
    expect([s.qemu_args_replace, s.qemu_args[1]]).toEqual([true, ['-drive', 'if=none,id=d0,file=${build.disk}']]);
    writeFileSync(file, template('disks'));
    expect(() => loadTemplate(file)).toThrow(
      /unknown build value \$\{build\.disks\}[\s\S]*did you mean \$\{build\.disk\}\?/,
    );
  });
});

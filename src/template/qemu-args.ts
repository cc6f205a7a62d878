/**
 * qemu_args may add to kiln's QEMU command line (src/qemu/argv.ts) but not take away what kiln steers
 * the VM with: its QMP socket, its serial console, its user network with the SSH forward, and QEMU as a
 * child process that exits when the guest powers off. Each refused switch says why kiln needs that
 * control and what to write instead; `kiln validate` catches it, not a build that hangs an hour later.
 */
import type { FieldProblem } from './errors.js';

/**
 * QEMU 7.2's switches that take no value (qemu-options.hx, as `qemu-system-x86_64 -help` lists them):
 * every other switch takes the next word as its value, whatever that word looks like.
 */
const takesNoValue = new Set([
  '-h',
  '-help',
  '-version',
  '-S',
  '-s',
  '-audio-help',
  '-daemonize',
  '-enable-kvm',
  '-enable-sync-profile',
  '-full-screen',
  '-mem-prealloc',
  '-no-acpi',
  '-no-fd-bootchk',
  '-no-hpet',
  '-no-reboot',
  '-no-shutdown',
  '-no-user-config',
  '-nodefaults',
  '-nographic',
  '-only-migratable',
  '-portrait',
  '-preconfig',
  '-semihosting',
  '-singlestep',
  '-snapshot',
  '-usb',
  '-win2k-hack',
  '-xen-attach',
  '-xen-domid-restrict',
]);

/** The ids kiln gives its own QEMU objects; a second object of that id clashes or steals kiln's. */
const kilnChardev = 'serial0';
const kilnNetdev = 'net0';
/** QEMU's own id for the chardev behind -qmp: kiln's QMP socket. */
const qmpChardev = 'compat_monitor0';

interface Refusal {
  why: string;
  fix: string;
}

/** `a,id=x,b=y` -> its keys; the first item without "=" is the switch's implied key (QEMU's ",," is a literal comma). */
function optionsOf(value: string, impliedKey: string): Map<string, string> {
  const options = new Map<string, string>();
  value.split(/(?<!,),(?!,)/).forEach((item, i) => {
    const eq = item.indexOf('=');
    if (eq < 0) options.set(i === 0 ? impliedKey : item, i === 0 ? item : 'on');
    else options.set(item.slice(0, eq), item.slice(eq + 1));
  });
  return options;
}

const network = (port: number) =>
  `kiln reaches the guest over SSH through its user network (netdev ${kilnNetdev}, forwarding a host port to the guest's port ${port})`;

/** Why `flag value` takes a control away from kiln, or undefined when it is kiln's to give. */
function refusal(flag: string, value: string | undefined, sshPort: number): Refusal | undefined {
  switch (flag) {
    case '-qmp':
    case '-qmp-pretty':
      return {
        why: `kiln talks to QEMU over its own QMP socket (power-down, key presses, status), in a private directory; this switch would replace it${/tcp:|telnet:|udp:|websocket:/.test(value ?? '') ? ", and open the VM's control socket to the network" : ''}`,
        fix: "remove it; to look into a failed build's VM, run kiln build --on-error=abort and use kiln console <build>",
      };
    case '-mon':
      return {
        why: `it attaches a second monitor beside kiln's QMP socket: anyone who reaches its chardev controls the VM kiln is building`,
        fix: 'remove it; kiln build --on-error=abort keeps a failed VM running to look into',
      };
    case '-monitor':
      return {
        why: `kiln turns QEMU's human monitor off (-monitor none); this switch replaces that and hands control of the VM to whoever reaches it`,
        fix: 'remove it; kiln build --on-error=abort keeps a failed VM running to look into',
      };
    case '-serial':
      return {
        why: `the first serial port is kiln's console (chardev ${kilnChardev}: serial boot_command, the console log in errors, panic detection, kiln console); this switch replaces it`,
        fix: 'remove it; for another serial port add [-chardev, "file,id=extra0,path=/tmp/extra0.log"] and [-device, "isa-serial,chardev=extra0"]',
      };
    case '-nographic':
      return {
        why: "it connects the serial port and the monitor to kiln's own standard input and output, beside kiln's console",
        fix: 'remove it: headless: true (the default) already runs the VM without a window',
      };
    case '-daemonize':
      return {
        why: 'it forks QEMU into the background: kiln could no longer wait for it to power off, stop it on Ctrl-C, or make it die with kiln',
        fix: 'remove it; kiln runs QEMU as its own child process',
      };
    case '-pidfile':
      return {
        why: `kiln knows QEMU's pid as its own child's; this switch writes and locks a file on this machine that kiln does not clean up, and that a second build of this template would fail to lock`,
        fix: 'remove it: kiln stops QEMU itself whichever way a build ends',
      };
    case '-S':
      return {
        why: 'it freezes the CPU until someone types "cont" on a monitor: the guest never boots, and kiln waits for SSH until communicator.timeout',
        fix: 'remove it; kiln build --on-error=abort keeps a failed VM running to look into',
      };
    case '-incoming':
      return {
        why: `it makes QEMU wait for a migration stream instead of booting the disk kiln prepared`,
        fix: 'remove it: kiln builds from base_image or iso',
      };
    case '-no-shutdown':
      return {
        why: 'it keeps QEMU running (paused) when the guest powers off, but kiln knows the disk is complete only when QEMU exits: the build would fail after shutdown_timeout',
        fix: 'remove it',
      };
    case '-netdev':
    case '-nic':
    case '-net': {
      const options = optionsOf(value ?? '', 'type');
      if (options.get('type') === 'none') {
        return {
          why: `it asks for a VM without a network, but ${network(sshPort)}; QEMU keeps kiln's card anyway`,
          fix: 'remove it; communicator: { type: none } builds without SSH (the install is the whole build)',
        };
      }
      if (flag !== '-net' && options.get('id') === kilnNetdev) {
        return {
          why: `it claims the id ${kilnNetdev}, kiln's own network: ${network(sshPort)}`,
          fix: `give yours another id and a card of its own: [${flag}, "${value?.replace(`id=${kilnNetdev}`, 'id=net1')}"]${flag === '-netdev' ? ' and [-device, "virtio-net-pci,netdev=net1"]' : ''}`,
        };
      }
      return undefined;
    }
    case '-chardev': {
      const id = optionsOf(value ?? '', 'backend').get('id');
      if (id === kilnChardev || id === qmpChardev) {
        return {
          why: `it claims the id ${id}, which is kiln's ${id === kilnChardev ? 'serial console' : 'QMP socket'}`,
          fix: 'give it another id, e.g. id=extra0',
        };
      }
      return undefined;
    }
    case '-device': {
      const options = optionsOf(value ?? '', 'driver');
      if (options.get('netdev') === kilnNetdev)
        return {
          why: `it plugs a second card into kiln's network: ${network(sshPort)}, and QEMU allows one card per network`,
          fix: 'give the card its own network: [-netdev, "user,id=net1"] and netdev=net1 here',
        };
      if (options.get('chardev') === kilnChardev)
        return {
          why: `it takes the chardev of kiln's serial console (${kilnChardev})`,
          fix: 'give the device a chardev of its own, e.g. [-chardev, "file,id=extra0,path=/tmp/extra0.log"] and chardev=extra0',
        };
      return undefined;
    }
    default:
      return undefined;
  }
}

/**
 * Problems with a build's qemu_args, each at the group (qemu_args[k]) that holds the switch. The groups
 * are read as QEMU reads the flattened command line: a switch, then its value if it takes one.
 */
export function qemuArgsProblems(
  groups: readonly (readonly string[])[],
  at: (string | number)[],
  sshPort: number,
): FieldProblem[] {
  const words = groups.flatMap((g, k) => g.map((word) => ({ word, k })));
  const problems: FieldProblem[] = [];
  for (let i = 0; i < words.length; i++) {
    const { word, k } = words[i]!;
    if (!word.startsWith('-') || word === '-') continue;
    // QEMU reads --foo as -foo, and has no -foo=value spelling (it stops with "invalid option").
    const flag = word.startsWith('--') ? word.slice(1) : word;
    if (flag.includes('=')) {
      const [name = flag, ...rest] = flag.split('=');
      problems.push({
        path: [...at, k],
        message: `QEMU has no ${word} spelling: it stops with "invalid option"`,
        fix: `write the switch and its value as two items: ["${name}", "${rest.join('=')}"]`,
      });
      continue;
    }
    const value = takesNoValue.has(flag) ? undefined : words[i + 1]?.word;
    if (!takesNoValue.has(flag)) i++;
    const refused = refusal(flag, value, sshPort);
    if (refused)
      problems.push({
        path: [...at, k],
        message: `${value === undefined ? word : `${word} ${value}`}: ${refused.why}`,
        fix: refused.fix,
      });
  }
  return problems;
}

/**
 * The qemu_args switch that sets SMBIOS type 1 fields, if any: QEMU refuses fields for a type it
 * was given a table file of ("can't add fields, binary file already loaded!", hw/smbios/smbios.c),
 * and kiln gives the NoCloud-Net seed URL in a type 1 table file.
 */
export function smbiosType1Switch(qemuArgs: readonly (readonly string[])[]): readonly string[] | undefined {
  return qemuArgs.find((a) => a[0] === '-smbios' && Number(/(?:^|,)type=([^,]*)/.exec(a[1] ?? '')?.[1]) === 1);
}

/** How kiln reaches the guest (`source.communicator`): SSH with a build key, or none at all. */
import { z } from 'zod';
import { type Fields, shapeOf } from './field.js';
import { because, duration } from './types.js';

export const sshCommunicatorFields = {
  type: {
    schema: z.literal('ssh').default('ssh'),
    cache: 'disk',
    doc: 'ssh: kiln logs in over SSH to provision (none: no login, no provisioners that need one).',
  },
  username: {
    schema: z.string().default('kiln'),
    cache: 'disk',
    packer: ['ssh_username'],
    doc: 'The user kiln logs in as (cloud-init creates it with the build key).',
  },
  password: {
    schema: z.string().optional(),
    cache: 'disk',
    packer: ['ssh_password'],
    doc: "Log in with this password instead of a key (e.g. an installer's answers file sets it).",
  },
  private_key_file: {
    schema: z.string().optional(),
    cache: 'runtime',
    packer: ['ssh_private_key_file'],
    doc: "A key the guest already trusts (e.g. a fixture's); kiln otherwise makes an ephemeral one.",
  },
  port: {
    schema: z.number().int().min(1).max(65535).default(22),
    cache: 'disk',
    packer: ['ssh_port'],
    doc: "The guest's SSH port.",
  },
  timeout: {
    schema: duration.prefault('10m'),
    cache: 'runtime',
    packer: ['ssh_timeout', 'ssh_wait_timeout'],
    doc: "How long kiln waits for the guest's SSH server to let it in.",
  },
  host_key_fingerprint: {
    schema: z
      .string()
      .refine(
        (v) => /^SHA256:[A-Za-z0-9+/]{43}=?$/.test(v),
        because(
          'not an SSH host key fingerprint',
          'write it as "ssh-keygen -lf <host key>.pub" prints it: SHA256: and 43 base64 characters',
        ),
      )
      .optional(),
    cache: 'runtime',
    packer: ['ssh_host_key_fingerprint'],
    doc: 'The guest\'s host key as "ssh-keygen -lf" prints it (SHA256:...), for guests kiln gives no host key.',
  },
  trust_on_first_use: {
    schema: z.boolean().default(false),
    cache: 'runtime',
    doc: 'Accept whatever host key the guest shows first (with a warning).',
  },
} as const satisfies Fields;

export const sshCommunicator = z.strictObject(shapeOf(sshCommunicatorFields));
export const noneCommunicator = z.strictObject({
  type: z.literal('none').describe('none: kiln never logs in; the build ends when the guest powers off.'),
});

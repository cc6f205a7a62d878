// The file provisioner's max_size (src/template/schema.ts): a size, for downloads only.
import { describe, expect, it } from 'vitest';
import { fileSchema as fileProvisioner } from '../../../../src/template/provisioner-kinds/file.js';

describe('file provisioner max_size', () => {
  const download = { type: 'file', source: '/var/log/build.log', destination: 'logs/', direction: 'download' };

  it('takes a size on a download', () => {
    expect(fileProvisioner.safeParse({ ...download, max_size: '20G' }).success).toBe(true);
    expect(fileProvisioner.safeParse({ ...download, max_size: 1048576 }).success).toBe(true);
  });

  it('refuses what is not a size, and a max_size on an upload, saying why', () => {
    const notSize = fileProvisioner.safeParse({ ...download, max_size: 'lots' });
    expect(notSize.success).toBe(false);
    expect(JSON.stringify(notSize.error?.issues)).toContain('is not a size');
    const upload = fileProvisioner.safeParse({ type: 'file', source: 'a', destination: '/tmp/a', max_size: '1M' });
    expect(upload.success).toBe(false);
    expect(upload.error?.issues[0]?.path).toEqual(['max_size']);
    expect(JSON.stringify(upload.error?.issues)).toContain('bounds what a download writes');
  });
});

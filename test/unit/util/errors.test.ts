// KilnError: the message users read keeps its layout (the problem, then an indented fix line), and the
// fix is also a field, so machine consumers (--events=json) need not parse it out of the text.
import { describe, expect, it } from 'vitest';
import { KilnError, fixOf } from '../../../src/util/errors.js';
import { TemplateError } from '../../../src/template/errors.js';
import { VariableError } from '../../../src/template/variables.js';
import { BundleError } from '../../../src/airgap/bundle-check.js';

describe('KilnError', () => {
  it('prints what, then the fix on its own indented line, and keeps both as fields', () => {
    const e = new KilnError('disk_size 1 GiB is smaller than the base image', {
      fix: 'set disk_size to at least 2 GiB',
    });
    expect(e.message).toBe('disk_size 1 GiB is smaller than the base image\n  fix: set disk_size to at least 2 GiB');
    expect(e.what).toBe('disk_size 1 GiB is smaller than the base image');
    expect(e.fix).toBe('set disk_size to at least 2 GiB');
    expect(fixOf(e)).toBe(e.fix);
    expect(e).toBeInstanceOf(Error);
  });

  it('without a fix is just the problem; a cause is kept', () => {
    const cause = new Error('EACCES');
    const e = new KilnError('cannot read x', { cause });
    expect(e.message).toBe('cannot read x');
    expect(e.fix).toBeUndefined();
    expect(e.cause).toBe(cause);
    expect(fixOf(new Error('plain\n  fix: not a field'))).toBeUndefined();
  });

  it('the error classes that carry a fix are KilnErrors', () => {
    const b = new BundleError('bundle x does not exist', { fix: 'give the path of a tar written by kiln bundle' });
    expect(b).toBeInstanceOf(KilnError);
    expect(b.message).toBe('bundle x does not exist\n  fix: give the path of a tar written by kiln bundle');
  });

  it("a template or variable error with one problem has that problem's fix; with several, each keeps its own inline", () => {
    const one = new TemplateError('t.yaml', [
      { path: ['builds', 0, 'memory'], line: 4, message: 'bad', fix: 'use 2G' },
    ]);
    expect(one.message).toBe('t.yaml:4: builds[0].memory: bad\n  fix: use 2G');
    expect(one.fix).toBe('use 2G');
    const two = new TemplateError('t.yaml', [
      { path: ['a'], message: 'bad a', fix: 'fix a' },
      { path: ['b'], message: 'bad b' },
    ]);
    expect(two.message).toBe('t.yaml: a: bad a\n  fix: fix a\nt.yaml: b: bad b');
    expect(two.fix).toBeUndefined();
    const v = new VariableError('--var', [{ path: ['size'], message: 'not a number', fix: 'give 10' }]);
    expect(v.message).toBe('--var: size: not a number\n  fix: give 10');
    expect(v.fix).toBe('give 10');
    expect(v.name).toBe('VariableError');
  });
});

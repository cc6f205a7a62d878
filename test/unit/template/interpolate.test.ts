import { describe, expect, it } from 'vitest';
import { interpolateString, interpolateTree } from '../../../src/template/interpolate.js';

const values = { var: { user: 'debian', cpus: 4, on: true }, build: { http_ip: '10.0.2.2', http_port: 8123 } };

describe('interpolation', () => {
  it('replaces var and build references inside text', () => {
    expect(interpolateString('url=http://${build.http_ip}:${build.http_port}/u/${var.user}', values)).toBe(
      'url=http://10.0.2.2:8123/u/debian',
    );
  });
  it('keeps the value type when the whole string is one reference', () => {
    expect(interpolateString('${var.cpus}', values)).toBe(4);
    expect(interpolateString('${ var.on }', values)).toBe(true);
  });
  it('leaves shell syntax alone', () => {
    const shell = 'echo ${HOME} ${1:-x} $PATH ${env.X}';
    expect(interpolateString(shell, values)).toBe(shell);
  });
  it('writes a literal ${ with $${', () => {
    expect(interpolateString('$${var.user} is ${var.user}', values)).toBe('${var.user} is debian');
  });
  it('reports undefined names with their path', () => {
    const misses: unknown[] = [];
    interpolateTree({ a: ['x ${var.nope}'] }, values, (m) => misses.push(m));
    expect(misses).toEqual([{ namespace: 'var', name: 'nope', path: ['a', 0] }]);
  });
  it('can resolve one namespace and leave the other for later', () => {
    expect(interpolateString('${var.user}@${build.http_ip}', values, undefined, 'var')).toBe('debian@${build.http_ip}');
  });
});

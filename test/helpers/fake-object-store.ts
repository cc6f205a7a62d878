/**
 * An in-memory object store for the remote cache's tests that misbehaves the ways real ones do: it
 * ignores "create only if absent" (s3rver), refuses it with 501 (Swift's s3api) or honours it with 412
 * (AWS, MinIO), lists new objects late, and can damage what it stores.
 */
import { Readable } from 'node:stream';
import {
  NotImplementedByStore,
  PreconditionFailed,
  type ObjectStore,
  type StoredObject,
} from '../../src/cache/remote/object-store.js';

export type Conditions = 'ignore' | '412' | '501';

export class FakeStore implements ObjectStore {
  readonly location = 's3://fake/cache';
  readonly objects = new Map<string, { body: Buffer; modified: Date }>();
  /** Keys in the order they were written. */
  readonly puts: string[] = [];
  /** Objects written fewer than this many list() calls ago do not show in listings yet. */
  listLag = 0;
  private listCalls = 0;
  private readonly writtenAt = new Map<string, number>();
  /** Corrupts what it stores under keys matching this (a store that damages on write). */
  corruptOnWrite?: RegExp;

  constructor(private readonly conditions: Conditions = 'ignore') {}

  async put(key: string, body: Buffer | Readable, o: { ifNoneMatch?: boolean } = {}): Promise<void> {
    if (o.ifNoneMatch && this.conditions === '501') throw new NotImplementedByStore('501');
    if (o.ifNoneMatch && this.conditions === '412' && this.objects.has(key)) throw new PreconditionFailed('412');
    let bytes = Buffer.isBuffer(body) ? body : Buffer.concat((await body.toArray()) as Buffer[]);
    if (this.corruptOnWrite?.test(key)) bytes = Buffer.concat([bytes.subarray(0, 1), Buffer.from('x')]);
    this.objects.set(key, { body: bytes, modified: new Date() });
    this.writtenAt.set(key, this.listCalls);
    this.puts.push(key);
  }

  async get(key: string): Promise<Readable | undefined> {
    const o = this.objects.get(key);
    return o ? Readable.from([o.body]) : undefined;
  }

  async list(prefix: string): Promise<StoredObject[]> {
    const call = this.listCalls++;
    return [...this.objects]
      .filter(([k]) => k.startsWith(prefix) && call - (this.writtenAt.get(k) ?? 0) >= this.listLag)
      .map(([key, o]) => ({ key, size: o.body.length, modified: o.modified }));
  }

  async delete(key: string): Promise<void> {
    this.objects.delete(key);
  }

  keys(prefix: string): string[] {
    return [...this.objects.keys()].filter((k) => k.startsWith(prefix)).sort();
  }
  /** Ages every object (prune's grace period). */
  age(ms: number): void {
    for (const o of this.objects.values()) o.modified = new Date(o.modified.getTime() - ms);
  }
}

/**
 * Waits until every promise has settled, so nothing started here is still running when the caller goes
 * on (a qemu-img writing into a work directory being removed), then throws the first rejection in the
 * order given. `undefined` stands for work that was not needed.
 */
export async function settleAll(promises: readonly (Promise<unknown> | undefined)[]): Promise<void> {
  for (const r of await Promise.allSettled(promises)) if (r.status === 'rejected') throw r.reason;
}

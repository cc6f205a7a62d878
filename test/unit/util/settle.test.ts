import { describe, expect, it } from 'vitest';
import { settleAll } from '../../../src/util/settle.js';

describe('settleAll', () => {
  it('waits for every promise, then throws the first rejection in the order given', async () => {
    let slowDone = false;
    const slow = new Promise<void>((resolve) =>
      setTimeout(() => {
        slowDone = true;
        resolve();
      }, 20),
    );
    await expect(
      settleAll([Promise.reject(new Error('first')), slow, Promise.reject(new Error('second'))]),
    ).rejects.toThrow('first');
    expect(slowDone).toBe(true);
  });

  it('resolves when all resolve; undefined stands for work not needed', async () => {
    await expect(settleAll([Promise.resolve(1), undefined])).resolves.toBeUndefined();
  });
});

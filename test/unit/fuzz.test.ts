import { afterAll, describe, it } from 'vitest';
import { ALL_TARGETS, closeAgentServer, fuzz } from '../fuzz/targets.js';

// 10^3 cases each here; bench/fuzz.ts runs 10^5.
describe('decoders on the far side of a trust boundary', () => {
  afterAll(closeAgentServer);
  for (const t of ALL_TARGETS) {
    it(`${t.name}: accepts or rejects cleanly`, async () => {
      await fuzz(t, 1000);
    }, 120_000);
  }
});

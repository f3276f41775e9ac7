import { GROUPS, PROPERTIES, assertRun } from '../../fuzz/properties';

/**
 * Every fuzz property of test/fuzz/properties.ts with a few thousand cases per group (the
 * deep runs, 100,000+ cases each, are `npm run fuzz`). FUZZ_SEED reproduces a failure.
 */
const RUNS_PER_GROUP = 3000;
const seed = process.env.FUZZ_SEED === undefined ? undefined : Number(process.env.FUZZ_SEED);

describe('fuzz - properties of every decoder (fast-check)', () => {
  for (const group of GROUPS) {
    const inGroup = PROPERTIES.filter((p) => p.group === group);
    const runs = Math.ceil(RUNS_PER_GROUP / inGroup.length);
    for (const p of inGroup) {
      it(`${group} - ${p.name}: ${p.invariant} (${runs} cases)`, () => {
        assertRun(p.check(runs, seed));
      });
    }
  }
});

// The id grammar is the contract's (src/contract): this re-export only keeps cgroups.ts's import working until
// its owner imports the contract directly; then this file goes.
export { checkId } from '../contract/index.js';

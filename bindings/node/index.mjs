// ESM entry: the same module as index.js (one instance, one set of classes);
// its named exports are index.js's, as Node reads them from module.exports.
export * from './index.js';
export { default } from './index.js';

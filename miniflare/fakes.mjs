// Demo JS fakes exposed to Python as module `cf_fakes` by run_pyodide.mjs (--js fakes.mjs).
// Shapes mimic what Cloudflare APIs hand to Python: promises, Maps, undefined vs null, Errors.
const fakes = {
  // async method returning a JS Map (like DurableObjectStorage.get([...]) / list())
  async getMap() {
    return new Map([["a", 1], ["b", { nested: [1, 2, 3] }], ["c", "three"]]);
  },
  async getUndefined() { return undefined; },
  async getNull() { return null; },
  getUndefinedSync() { return undefined; },
  getNullSync() { return null; },
  // async failure, like storage.put(k, undefined)
  async failTypeError(msg) { throw new TypeError(msg ?? "put() called with undefined value."); },
  async failError(msg) { throw new Error(msg ?? "boom"); },
  async failDOMException() { throw new DOMException("could not be cloned.", "DataCloneError"); },
  async failString() { throw "a plain string"; },
  // describe what arrived from Python (how to_js etc. look on the JS side)
  describe(x) {
    const t = x === null ? "null" : typeof x;
    let ctor = x && x.constructor ? x.constructor.name : null;
    let json;
    try { json = JSON.stringify(x instanceof Map ? [...x] : x); } catch (e) { json = `!${e.name}`; }
    let cloned;
    try { structuredClone(x); cloned = "ok"; } catch (e) { cloned = `${e.name}: ${e.message}`; }
    return `type=${t} ctor=${ctor} isMap=${x instanceof Map} isArray=${Array.isArray(x)} json=${json} structuredClone=${cloned}`;
  },
  // a timer-based promise, to check asyncio interleaving with real JS timers
  sleep(ms) { return new Promise((r) => setTimeout(() => r(ms), ms)); },
  now() { return Date.now(); },
};
export default fakes;

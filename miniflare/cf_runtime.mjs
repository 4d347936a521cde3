// JavaScript fakes of the Cloudflare objects a Python Durable Object and Worker touch,
// exposed to Python as module `cf_runtime` (run_pyodide.mjs --js cf_runtime.mjs:cf_runtime).
//
// FakeStorage reproduces, row by row, the table "Measured in a real workerd with Python
// Durable Objects" of shared/RUNTIME.md, for calls made WITHOUT the workers SDK's wrapper
// (the "old SDK" mode: Python containers arrive as PyProxy objects):
//   get(missing) -> undefined; get(null-valued) n/a (values are never null)
//   put(k, undefined) -> TypeError("put() called with undefined value.")
//   put(k, PyProxy dict/list/bytes) -> DataCloneError (structuredClone)
//   put(PyProxy dict) as a batch -> silently writes nothing
//   put(object) batch: unserializable value -> rejected before anything is written;
//                      oversize value -> SQLITE_TOOBIG, the entries before it STAY written
//   get(PyProxy list) -> undefined; delete(PyProxy list) -> false; list(PyProxy options) -> options ignored
//   get(Array)/list() -> Map in UTF-8 byte order of keys, missing keys absent
//   delete(k) -> bool, delete(Array) -> count; deleteAll() keeps the alarm
//   setAlarm(ms|Date) / getAlarm() -> null when unset, else ms / deleteAlarm()
//   transaction(async fn) -> rollback of every write on a throw, re-thrown as Error("PythonError: ...")
//   every method returns a Promise that settles on a later macrotask (other work can run)
// Writes are applied when issued (visible to later reads at once); the calls issued in one
// synchronous run (no await between them) are recorded as one batch in `batches`, which is
// what Cloudflare commits atomically.
let PyProxy = null;
export async function setup(pyodide) {
  PyProxy = pyodide.ffi.PyProxy;
}

const MAX_VALUE_BYTES = 2_200_000; // measured: largest value ~2.2 MB serialized, key counts
const utf8 = (s) => Buffer.from(s, "utf8");
const compareUtf8 = (a, b) => Buffer.compare(utf8(a), utf8(b));
const later = (fn) =>
  new Promise((resolve, reject) =>
    setTimeout(() => {
      try {
        resolve(fn());
      } catch (e) {
        reject(e);
      }
    }, 0),
  );
const isPyProxy = (x) => PyProxy !== null && x instanceof PyProxy;
const isPlainObject = (x) =>
  x !== null && typeof x === "object" && !isPyProxy(x) && Object.getPrototypeOf(x) === Object.prototype;

function sizeOf(key, value) {
  const text =
    typeof value === "string" ? value : JSON.stringify(value, (k, v) => (typeof v === "bigint" ? String(v) : v)) ?? "";
  return utf8(key).length + utf8(text).length;
}

function cloneValue(value) {
  if (value === undefined) throw new TypeError("put() called with undefined value.");
  if (isPyProxy(value)) {
    // What structuredClone does with a PyProxy, spelled out.
    throw new DOMException("#<Object> could not be cloned.", "DataCloneError");
  }
  return structuredClone(value);
}

export class FakeStorage {
  constructor() {
    this.data = new Map();
    this.alarm = null;
    this.batches = [];
    this.calls = [];
    this._open = null;
    this.failNextPut = null; // an Error to throw from the next put (fault injection)
  }

  _record(op) {
    this.calls.push(op);
    if (this._open === null) {
      this._open = [];
      this.batches.push(this._open);
      // Closes when control returns to the event loop: calls made with no await between
      // them land in one batch, as Cloudflare coalesces them.
      queueMicrotask(() => {
        this._open = null;
      });
    }
    this._open.push(op);
  }

  get(key) {
    this.calls.push("get");
    if (typeof key === "string") {
      const v = this.data.get(key);
      return later(() => (v === undefined ? undefined : structuredClone(v)));
    }
    if (Array.isArray(key)) {
      const keys = [...new Set(key.map(String))].sort(compareUtf8);
      return later(() => new Map(keys.filter((k) => this.data.has(k)).map((k) => [k, structuredClone(this.data.get(k))])));
    }
    return later(() => undefined); // a PyProxy list: silently nothing
  }

  put(key, value) {
    if (this.failNextPut) {
      const e = this.failNextPut;
      this.failNextPut = null;
      return later(() => {
        throw e;
      });
    }
    if (typeof key === "string") {
      let cloned;
      try {
        cloned = cloneValue(value);
        if (sizeOf(key, cloned) > MAX_VALUE_BYTES) throw new Error("string or blob too big: SQLITE_TOOBIG");
      } catch (e) {
        return later(() => {
          throw e;
        });
      }
      this._record(["put", key]);
      this.data.set(key, cloned);
      return later(() => undefined);
    }
    if (isPlainObject(key)) {
      const entries = Object.entries(key);
      let cloned;
      try {
        cloned = entries.map(([k, v]) => [k, cloneValue(v)]); // unserializable: nothing written
      } catch (e) {
        return later(() => {
          throw e;
        });
      }
      this._record(["put", ...entries.map(([k]) => k)]);
      for (const [k, v] of cloned) {
        if (sizeOf(k, v) > MAX_VALUE_BYTES) {
          return later(() => {
            throw new Error("string or blob too big: SQLITE_TOOBIG");
          });
        }
        this.data.set(k, v); // entries before an oversize one stay written
      }
      return later(() => undefined);
    }
    // A PyProxy dict (or a Map): silently writes nothing.
    this.calls.push("put-ignored");
    return later(() => undefined);
  }

  delete(key) {
    if (typeof key === "string") {
      this._record(["delete", key]);
      const had = this.data.delete(key);
      return later(() => had);
    }
    if (Array.isArray(key)) {
      this._record(["delete", ...key]);
      let n = 0;
      for (const k of key) if (this.data.delete(String(k))) n++;
      return later(() => n);
    }
    return later(() => false); // a PyProxy list: silently nothing
  }

  deleteAll() {
    this._record(["deleteAll"]);
    this.data.clear(); // keeps the alarm
    return later(() => undefined);
  }

  list(options) {
    this.calls.push("list");
    const o = isPlainObject(options) ? options : {}; // a PyProxy or Map: options ignored
    let keys = [...this.data.keys()].sort(compareUtf8);
    if (o.prefix !== undefined) keys = keys.filter((k) => k.startsWith(o.prefix));
    if (o.start !== undefined) keys = keys.filter((k) => compareUtf8(k, o.start) >= 0);
    if (o.startAfter !== undefined) keys = keys.filter((k) => compareUtf8(k, o.startAfter) > 0);
    if (o.end !== undefined) keys = keys.filter((k) => compareUtf8(k, o.end) < 0);
    if (o.reverse) keys.reverse();
    if (o.limit !== undefined) keys = keys.slice(0, o.limit);
    return later(() => new Map(keys.map((k) => [k, structuredClone(this.data.get(k))])));
  }

  setAlarm(when) {
    const ms = when instanceof Date ? when.getTime() : when;
    if (typeof ms !== "number" || !Number.isFinite(ms)) {
      return later(() => {
        throw new TypeError("setAlarm() requires a number of milliseconds or a Date");
      });
    }
    this._record(["setAlarm", ms]);
    this.alarm = ms;
    return later(() => undefined);
  }

  getAlarm() {
    this.calls.push("getAlarm");
    const a = this.alarm;
    return later(() => a); // null when unset
  }

  deleteAlarm() {
    this._record(["deleteAlarm"]);
    this.alarm = null;
    return later(() => undefined);
  }

  async transaction(fn) {
    const data = new Map(this.data);
    const alarm = this.alarm;
    try {
      return await fn(this);
    } catch (e) {
      this.data = data;
      this.alarm = alarm;
      throw new Error(`PythonError: ${e && e.message ? e.message : e}`);
    }
  }

  snapshot() {
    return Object.fromEntries([...this.data.entries()].sort(([a], [b]) => compareUtf8(a, b)));
  }
  batchesJson() {
    return JSON.stringify(this.batches);
  }
  clearLog() {
    this.batches = [];
    this.calls = [];
  }
}

// One storage per object name, kept across "restarts" (new contexts) like durable storage.
const objects = new Map();
export function storageOf(name) {
  if (!objects.has(name)) objects.set(name, new FakeStorage());
  return objects.get(name);
}
// A DurableObjectState: {storage, id}; id.name is undefined unless given (workerd 2024).
export function makeState(name, withName = true) {
  const id = { name: withName ? name : undefined, toString: () => `id-of-${name}` };
  return { storage: storageOf(name), id, waitUntil() {} };
}
export function newStorage() {
  return new FakeStorage();
}
export function typeOf(x) {
  if (x === null) return "null";
  if (x instanceof Map) return "Map";
  if (Array.isArray(x)) return "Array";
  if (isPyProxy(x)) return "PyProxy";
  return typeof x;
}

// --- the Durable Object namespace binding, as a Worker sees it ----------------------------
// idFromName(name) -> id; get(id) -> stub; stub.fetch(url, init) where init must be a plain
// JS object: a PyProxy init is ignored (GET without body, as measured), headers given as a
// PyProxy dict throw TypeError("Incorrect type: ... not of type 'Sequence'.").
export class FakeNamespace {
  constructor(handler) {
    this.handler = handler; // async (name, Request) => Response
    this.requests = [];
  }
  idFromName(name) {
    return { name, toString: () => `hex-${name}` };
  }
  get(id) {
    const ns = this;
    return {
      id,
      async fetch(url, init) {
        let opts = {};
        if (isPlainObject(init)) opts = init;
        if (opts.headers !== undefined && isPyProxy(opts.headers)) {
          throw new TypeError("Incorrect type: the provided value is not of type 'Sequence'.");
        }
        const request = new Request(url, opts);
        ns.requests.push({ name: id.name, method: request.method, url: request.url });
        return await ns.handler(id.name, request);
      },
    };
  }
}

// A namespace whose objects answer like WorkflowExecutionDO (enough for the client).
export function workflowDoubleNamespace() {
  const executions = new Map();
  const json = (obj, status = 200) =>
    new Response(JSON.stringify(obj), { status, headers: { "content-type": "application/json" } });
  return new FakeNamespace(async (name, request) => {
    const url = new URL(request.url);
    const body = request.method === "GET" ? null : await request.text();
    const ex = executions.get(name);
    if (url.pathname === "/execute") {
      const b = JSON.parse(body);
      if (request.headers.get("content-type") !== "application/json") return json({ error: { code: "bad_content_type", message: "x" } }, 415);
      if (ex) return json({ execution: ex, created: false });
      const view = { execution_id: b.execution_id, workflow: b.workflow, status: "completed", settled: true, input: b.input };
      executions.set(name, view);
      return json({ execution: view, created: true }, 201);
    }
    if (!ex) return json({ error: { code: "execution_not_found", message: "no execution with this id" } }, 404);
    if (url.pathname === "/status") return json({ execution: ex });
    if (url.pathname === "/journal") return json({ entries: [{ op: 0, name: "only", status: "completed", phase: "main" }] });
    if (url.pathname === "/result")
      return json({ result: { ...ex, ok: true, value: { echoed: ex.input, wait: url.searchParams.get("wait") } } });
    if (url.pathname === "/cancel") return json({ execution: ex, cancelled: false });
    return json({ error: { code: "not_found", message: url.pathname } }, 404);
  });
}

// --- global fetch for workkit_workflow.http ------------------------------------------------
export const fetchLog = [];
export function installFetch() {
  globalThis.fetch = async (url, init) => {
    if (init !== undefined && !isPlainObject(init)) init = {}; // a PyProxy init is ignored
    if (init && init.headers !== undefined && isPyProxy(init.headers)) {
      throw new TypeError("Incorrect type: the provided value is not of type 'Sequence'.");
    }
    const request = new Request(url, init);
    const body = request.method === "GET" ? "" : await request.text();
    fetchLog.push({ url: request.url, method: request.method, headers: Object.fromEntries(request.headers), body });
    return new Response(JSON.stringify({ got: body }), { status: 201, headers: { "x-echo": "1", "content-type": "application/json" } });
  };
}
export function fetchLogJson() {
  return JSON.stringify(fetchLog);
}

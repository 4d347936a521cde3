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

// --- ctx.storage.sql of a SQLite-backed object, as far as the SQL journal uses it ------------
// FakeSql runs the statements of _cloudflare.SqlJournalStorage (and nothing else: an unknown
// statement throws) against one table of text keys kept in UTF-8 byte order, as SQLite's
// BINARY collation orders them. Measured behaviour it reproduces (shared/RUNTIME.md,
// probes.py): exec is synchronous; a statement is atomic (a NOT NULL violation in a
// multi-row upsert keeps none of its rows); ints >= 2**53 are refused; at most 100 bound
// parameters; transactionSync(fn) rolls back SQL rows, key-value data and the alarm when fn
// throws, and re-throws fn's error. Writes are recorded in the storage's batches as
// ["sql", "upsert"|"delete", ...keys], so one commit's SQL writes and alarm change can be
// seen to land in one batch.
class FakeCursor {
  constructor(columns, rows) {
    this.columns = columns;
    this.rows = rows;
  }
  raw() {
    return { toArray: () => this.rows.map((r) => [...r]) };
  }
  toArray() {
    return this.rows.map((r) => Object.fromEntries(this.columns.map((c, i) => [c, r[i]])));
  }
  one() {
    if (this.rows.length !== 1) throw new Error(`Expected exactly one result from SQL query, but got ${this.rows.length}.`);
    return this.toArray()[0];
  }
}

const TABLE = "workkit_journal";
export class FakeSql {
  constructor(storage) {
    this.storage = storage;
    this.tables = new Map(); // name -> Map(key -> value)
    this.statements = 0;
  }
  _table() {
    const t = this.tables.get(TABLE);
    if (!t) throw new Error(`no such table: ${TABLE}: SQLITE_ERROR`);
    return t;
  }
  _sorted(filter) {
    return [...this._table().entries()].filter(([k]) => filter(k)).sort(([a], [b]) => compareUtf8(a, b));
  }
  exec(query, ...args) {
    this.statements++;
    if (args.length > 100) throw new Error("too many SQL variables: SQLITE_ERROR");
    for (const a of args) {
      if (typeof a === "number" && Math.abs(a) >= 2 ** 53) throw new TypeError("Value out of range");
      if (a !== null && a !== undefined && typeof a !== "string" && typeof a !== "number") {
        throw new TypeError(`unsupported binding type ${typeof a}`);
      }
    }
    const q = query.replace(/\s+/g, " ").trim();
    let m;
    if (q === "SELECT 1") return new FakeCursor(["1"], [[1]]);
    if (q.startsWith(`CREATE TABLE IF NOT EXISTS ${TABLE} (`)) {
      if (!this.tables.has(TABLE)) this.tables.set(TABLE, new Map());
      return new FakeCursor([], []);
    }
    if (q === `SELECT 1 FROM ${TABLE} LIMIT 1`) return new FakeCursor(["1"], this._table().size ? [[1]] : []);
    if (q === `SELECT value FROM ${TABLE} WHERE key = ?`) {
      const t = this._table();
      return new FakeCursor(["value"], t.has(args[0]) ? [[t.get(args[0])]] : []);
    }
    if ((m = q.match(new RegExp(`^SELECT key, value FROM ${TABLE} WHERE key IN \\(([?, ]+)\\)$`)))) {
      const wanted = new Set(args);
      return new FakeCursor(["key", "value"], this._sorted((k) => wanted.has(k)));
    }
    if ((m = q.match(new RegExp(`^SELECT key, value FROM ${TABLE}( WHERE (.*))? ORDER BY key( DESC)?( LIMIT \\?)?$`)))) {
      const rest = [...args];
      const tests = [];
      for (const clause of (m[2] ?? "").split(/ AND (?=key )/).filter(Boolean)) {
        if (clause === "key >= ? AND substr(key, 1, ?) = ?") {
          const [low, , prefix] = rest.splice(0, 3);
          tests.push((k) => compareUtf8(k, low) >= 0 && k.startsWith(prefix));
        } else if (clause === "key >= ?") {
          const low = rest.shift();
          tests.push((k) => compareUtf8(k, low) >= 0);
        } else if (clause === "key < ?") {
          const high = rest.shift();
          tests.push((k) => compareUtf8(k, high) < 0);
        } else throw new Error(`FakeSql: unsupported clause ${clause}`);
      }
      let rows = this._sorted((k) => tests.every((t) => t(k)));
      if (m[3]) rows.reverse();
      if (m[4]) rows = rows.slice(0, rest.shift());
      return new FakeCursor(["key", "value"], rows);
    }
    if (q.startsWith(`INSERT INTO ${TABLE} (key, value) VALUES `) && q.endsWith("ON CONFLICT (key) DO UPDATE SET value = excluded.value")) {
      const rows = [];
      for (let i = 0; i < args.length; i += 2) {
        if (args[i + 1] === null || args[i + 1] === undefined) {
          throw new Error(`NOT NULL constraint failed: ${TABLE}.value: SQLITE_CONSTRAINT`); // nothing written
        }
        rows.push([args[i], typeof args[i + 1] === "number" ? args[i + 1] : String(args[i + 1])]);
      }
      this.storage._record(["sql", "upsert", ...rows.map(([k]) => k)]);
      for (const [k, v] of rows) this._table().set(k, v);
      return new FakeCursor([], []);
    }
    if (q.startsWith(`DELETE FROM ${TABLE} WHERE key IN (`)) {
      this.storage._record(["sql", "delete", ...args]);
      for (const k of args) this._table().delete(k);
      return new FakeCursor([], []);
    }
    throw new Error(`FakeSql: statement not supported by the fake: ${q}`);
  }
  snapshot() {
    return Object.fromEntries(this._sorted(() => true));
  }
}

export class FakeSqliteStorage extends FakeStorage {
  constructor() {
    super();
    this.sql = new FakeSql(this);
  }
  transactionSync(fn) {
    const data = new Map(this.data);
    const alarm = this.alarm;
    const tables = new Map([...this.sql.tables].map(([n, t]) => [n, new Map(t)]));
    try {
      return fn();
    } catch (e) {
      this.data = data;
      this.alarm = alarm;
      this.sql.tables = tables;
      throw e;
    }
  }
  deleteAll() {
    this.sql.tables.clear(); // drops SQL tables too (measured)
    return super.deleteAll();
  }
}

// One storage per object name, kept across "restarts" (new contexts) like durable storage.
const objects = new Map();
export function storageOf(name) {
  if (!objects.has(name)) objects.set(name, new FakeStorage());
  return objects.get(name);
}
// A DurableObjectState: {storage, id}; id.name is undefined unless given (workerd 2024).
export function makeState(name, withName = true, sqlite = false) {
  const id = { name: withName ? name : undefined, toString: () => `id-of-${name}` };
  if (!objects.has(name) && sqlite) objects.set(name, new FakeSqliteStorage());
  return { storage: storageOf(name), id, waitUntil() {} };
}
export function newStorage() {
  return new FakeStorage();
}
export function newSqliteStorage() {
  return new FakeSqliteStorage();
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

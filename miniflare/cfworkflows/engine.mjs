// A JavaScript fake of Cloudflare Workflows, shaped like the local engine of
// workers-sdk (packages/workflows-shared): the `step` object handed to
// `run(event, step)` and the Workflows binding (`create`/`get`, instance
// `status`/`terminate`/`sendEvent`/`restart`/`pause`/`resume`).
//
// What it models, because the adapter depends on it:
// - step results are cached by name + per-name counter (`${name}-${count}`,
//   counters per run, i.e. reset when `run` starts again) and replayed,
//   terminal errors too (as Error {name, message});
// - step config is validated strictly (unknown keys rejected, like the zod
//   schema), then merged over {retries: {limit: 5, delay: 1000, backoff:
//   "exponential"}, timeout: "10 minutes"}; retries happen inside `do`;
// - NonRetryableError is recognised by error *name* (or a message prefix);
// - results must be structured-clonable and at most 1 MiB as JSON;
// - sleeps are recorded, not waited; events sent before a wait are queued per
//   type; a wait's timeout (scaled by `timeScale`) rejects and is replayed;
// - `evict(id)` abandons the running `run` (its promises never settle) and
//   starts it again over the same cache: a simulated restart.
// Registered into Pyodide by run_pyodide.mjs (`--js engine.mjs:cf_engine`).

const UNITS = {
  ms: 1, millisecond: 1,
  s: 1000, sec: 1000, second: 1000,
  m: 60000, min: 60000, minute: 60000,
  h: 3600000, hr: 3600000, hour: 3600000,
  d: 86400000, day: 86400000,
  w: 604800000, week: 604800000,
  month: 2629800000, year: 31557600000,
};

export function ms(duration) {
  if (typeof duration === "number") return duration;
  if (typeof duration !== "string") return NaN;
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]+)\s*$/.exec(duration);
  if (!m) return NaN;
  let unit = m[2].toLowerCase();
  if (!(unit in UNITS) && unit.endsWith("s")) unit = unit.slice(0, -1);
  return unit in UNITS ? Number(m[1]) * UNITS[unit] : NaN;
}

const DEFAULT_CONFIG = { retries: { limit: 5, delay: 1000, backoff: "exponential" }, timeout: "10 minutes" };
const MAX_OUTPUT = 1 << 20;

function fatal(message, name = "WorkflowFatalError") {
  const e = new Error(message);
  e.name = name;
  return e;
}

function isDuration(v, allowZero) {
  if (typeof v === "number") return v > 0 || (allowZero && v === 0);
  if (typeof v === "string") return !Number.isNaN(ms(v)) && (allowZero || ms(v) > 0);
  return false;
}

export function validateConfig(config) {
  const plain = (o) => o !== null && typeof o === "object" && !Array.isArray(o) && !(o instanceof Map);
  if (!plain(config)) return "config must be a plain object";
  for (const k of Object.keys(config)) if (!["retries", "timeout", "sensitive"].includes(k)) return `unknown key ${k}`;
  if (config.retries !== undefined) {
    const r = config.retries;
    if (!plain(r)) return "retries must be a plain object";
    for (const k of Object.keys(r)) if (!["limit", "delay", "backoff"].includes(k)) return `unknown key retries.${k}`;
    if (typeof r.limit !== "number" || r.limit < 0) return "retries.limit must be a number >= 0";
    if (!isDuration(r.delay, true)) return "retries.delay must be ms or a duration string";
    if (r.backoff !== undefined && !["constant", "linear", "exponential"].includes(r.backoff)) return "bad retries.backoff";
  }
  if (config.timeout !== undefined && !isDuration(config.timeout, false)) return "bad timeout";
  return null;
}

function retryDelay(config, attempt) {
  const d = ms(config.retries.delay);
  if (config.retries.backoff === "exponential") return d * 2 ** (attempt - 1);
  if (config.retries.backoff === "linear") return d * attempt;
  return d;
}

function isNonRetryable(e) {
  return e instanceof Error && (e.name === "NonRetryableError" || String(e.message).startsWith("NonRetryableError"));
}

// Across the RPC boundary an error's name is folded into its message: the real
// engine (wrangler 4.164.0) rethrows `Error("NonRetryableError: stop now")`.
function overRpc(name, message) {
  return new Error(name && name !== "Error" ? `${name}: ${message}` : message);
}

function asError(e) {
  if (e instanceof Error) return e;
  return new Error(String(e));
}

const never = () => new Promise(() => {});

// The `step` object of one run (one lifetime of the engine).
// Plain (not #private) members: the SDK wraps this object in a Proxy, as it does
// the real engine's RPC stub, and private fields do not work through a Proxy.
class WorkflowStep {
  _inst; _counters = new Map();
  constructor(inst) { this._inst = inst; this.dead = false; }

  _count(key) {
    const n = (this._counters.get(key) ?? 0) + 1;
    this._counters.set(key, n);
    return n;
  }

  _alive(promise) {
    // After an eviction, the abandoned run never hears back.
    return promise.then((v) => (this.dead ? never() : v), (e) => (this.dead ? never() : Promise.reject(e)));
  }

  async do(name, configOrCallback, maybeCallback) {
    return this._alive(this._do(name, configOrCallback, maybeCallback));
  }

  async _do(name, configOrCallback, maybeCallback) {
    const inst = this._inst;
    const callback = maybeCallback ?? configOrCallback;
    const stepConfig = maybeCallback ? configOrCallback : {};
    if (typeof name !== "string" || name.length > 256 || /[\x00-\x1f]/.test(name)) {
      throw overRpc("WorkflowFatalError", `Step name "${name}" exceeds max length (256 chars) or invalid characters found`);
    }
    if (typeof callback !== "function") throw new TypeError("step callback must be a function");
    const invalid = validateConfig(stepConfig);
    if (invalid) {
      inst.invalidConfigs.push({ name, reason: invalid });
      throw overRpc("WorkflowFatalError", `Step config for "${name}" is in a invalid format: ${invalid}`);
    }
    const config = {
      ...DEFAULT_CONFIG, ...stepConfig,
      retries: { ...DEFAULT_CONFIG.retries, ...(stepConfig.retries ?? {}) },
    };
    const count = this._count("run-" + name);
    const key = `${name}-${count}`;
    if (inst.cache.has(key + "-value")) {
      inst.log.push({ event: "replay", key });
      return structuredClone(inst.cache.get(key + "-value").value);
    }
    if (inst.cache.has(key + "-error")) {
      inst.log.push({ event: "replay-error", key });
      const { name: errName, message } = inst.cache.get(key + "-error");
      throw overRpc(errName, message);
    }
    inst.configs.set(key, config);
    let attempt = inst.cache.get(key + "-attempts") ?? 0;
    for (;;) {
      attempt += 1;
      inst.cache.set(key + "-attempts", attempt);
      inst.log.push({ event: "attempt", key, attempt });
      let result;
      try {
        let timer;
        const timeout = new Promise((_, reject) => {
          timer = setTimeout(
            () => reject(fatal(`Execution timed out after ${ms(config.timeout)}ms`, "WorkflowTimeoutError")),
            ms(config.timeout) * inst.engine.timeScale,
          );
        });
        try {
          result = await Promise.race([callback({ attempt, step: { name, count }, config }), timeout]);
        } finally {
          clearTimeout(timer);
        }
        if (this.dead) return never();
        try {
          result = structuredClone(result);
        } catch (e) {
          throw fatal(`Value returned from step "${name}" is not serialisable`);
        }
        const size = JSON.stringify(result ?? null).length;
        if (size > MAX_OUTPUT) throw fatal(`Step ${key} output is too large. Maximum allowed size is 1MiB.`);
      } catch (e0) {
        if (this.dead) return never();
        const e = asError(e0);
        const nonRetryable = isNonRetryable(e);
        inst.log.push({ event: "attempt-failed", key, attempt, name: e.name, message: e.message, nonRetryable });
        const terminal = nonRetryable || e.name === "WorkflowFatalError" || attempt > config.retries.limit;
        if (terminal) {
          inst.cache.set(key + "-error", { name: e.name, message: e.message });
          throw overRpc(e.name, e.message);
        }
        inst.retryWaits.push({ key, attempt, ms: retryDelay(config, attempt) });
        continue;
      }
      inst.cache.set(key + "-value", { value: result });
      inst.log.push({ event: "success", key, attempt });
      return structuredClone(result);
    }
  }

  async sleep(name, duration) {
    return this._alive(this._sleep(name, duration, "sleep"));
  }

  async _sleep(name, duration, kind) {
    const inst = this._inst;
    if (typeof duration !== "string" && typeof duration !== "number") {
      throw new TypeError(`sleep duration must be a string or a number of ms, got ${typeof duration}`);
    }
    const msValue = ms(duration);
    if (Number.isNaN(msValue)) throw new TypeError(`cannot parse sleep duration ${duration}`);
    const count = this._count("sleep-" + name);
    const key = `${name}-${count}`;
    if (inst.cache.has(key + "-slept")) return undefined;
    inst.cache.set(key + "-slept", true);
    inst.sleeps.push({ name, key, kind, duration, ms: msValue });
    return undefined;
  }

  async sleepUntil(name, timestamp) {
    let t = timestamp;
    if (t instanceof Date) t = t.valueOf();
    if (typeof t !== "number") throw new TypeError(`sleepUntil needs a Date or ms since epoch, got ${typeof timestamp}`);
    if (t < Date.now()) throw new Error("You can't sleep until a time in the past, time-traveler");
    return this._alive(this._sleep(name, t - Date.now(), "sleepUntil"));
  }

  async waitForEvent(name, options) {
    return this._alive(this._waitForEvent(name, options));
  }

  async _waitForEvent(name, options) {
    const inst = this._inst;
    const type = options?.type;
    if (typeof type !== "string") throw new TypeError("waitForEvent needs options.type");
    const timeout = options.timeout ?? "24 hours";
    if (Number.isNaN(ms(timeout))) throw new TypeError(`cannot parse timeout ${timeout}`);
    const count = this._count("waitForEvent-" + name);
    const key = `${name}-${count}`;
    if (inst.cache.has(key + "-value")) return structuredClone(inst.cache.get(key + "-value"));
    if (inst.cache.has(key + "-error")) {
      const { name: n, message } = inst.cache.get(key + "-error");
      throw overRpc(n, message);
    }
    inst.waits.push({ name, key, type, timeout });
    const queued = inst.events.get(type);
    let event = queued && queued.length ? queued.shift() : null;
    if (!event) {
      inst.status = "waiting";
      let timer;
      try {
        event = await new Promise((resolve, reject) => {
          const waiter = { resolve, step: this };
          inst.waiters.push({ type, waiter });
          timer = setTimeout(() => {
            inst.waiters = inst.waiters.filter((w) => w.waiter !== waiter);
            reject(fatal(`Execution timed out after ${ms(timeout)}ms`, "WorkflowTimeoutError"));
          }, ms(timeout) * inst.engine.timeScale);
        });
      } catch (e) {
        if (this.dead) return never();
        inst.cache.set(key + "-error", { name: e.name, message: e.message });
        if (inst.status === "waiting") inst.status = "running";
        throw overRpc(e.name, e.message);
      } finally {
        clearTimeout(timer);
      }
      if (inst.status === "waiting") inst.status = "running";
    }
    inst.cache.set(key + "-value", event);
    return structuredClone(event);
  }
}

class Instance {
  constructor(engine, id, params) {
    Object.assign(this, {
      engine, id, params, status: "queued", output: undefined, error: undefined,
      cache: new Map(), events: new Map(), waiters: [], log: [], sleeps: [], waits: [],
      retryWaits: [], configs: new Map(), invalidConfigs: [], runs: 0, step: null, settled: null,
    });
  }

  start() {
    if (this.step) this.step.dead = true;
    this.waiters = [];
    const step = new WorkflowStep(this);
    this.step = step;
    this.runs += 1;
    this.status = "running";
    const event = { payload: this.params, timestamp: new Date(), instanceId: this.id, workflowName: this.engine.name };
    this.settled = (async () => {
      try {
        const out = await this.engine.runner(event, this.engine.wrapStep(step));
        if (step.dead || this.status === "terminated") return;
        this.output = out === undefined ? null : structuredClone(out);
        this.status = "complete";
      } catch (e0) {
        if (step.dead || this.status === "terminated") return;
        const e = asError(e0);
        this.error = { name: e.name, message: e.message };
        this.status = "errored";
      }
    })();
    return this.settled;
  }

  deliver(type, payload) {
    const event = { payload: structuredClone(payload), timestamp: new Date(), type };
    const i = this.waiters.findIndex((w) => w.type === type && !w.waiter.step.dead);
    if (i >= 0) {
      const [w] = this.waiters.splice(i, 1);
      w.waiter.resolve(event);
    } else {
      if (!this.events.has(type)) this.events.set(type, []);
      this.events.get(type).push(event);
    }
  }
}

// What `env.MY_WORKFLOW.get(id)` / `create()` return.
class WorkflowInstance {
  #inst;
  constructor(inst) { this.#inst = inst; this.id = inst.id; }
  async status() {
    const i = this.#inst;
    const s = { status: i.status };
    if (i.status === "errored") s.error = i.engine.errorAsString ? `${i.error.name}: ${i.error.message}` : { ...i.error };
    if (i.status === "complete") s.output = structuredClone(i.output);
    return s;
  }
  async terminate() {
    const i = this.#inst;
    if (["complete", "errored", "terminated"].includes(i.status)) throw new Error("Cannot terminate instance since its on a finite state");
    i.status = "terminated";
    if (i.step) i.step.dead = true;
  }
  async sendEvent(options) {
    const i = this.#inst;
    if (typeof options?.type !== "string") throw new TypeError("sendEvent needs {type, payload}");
    if (JSON.stringify(options.payload ?? null).length > MAX_OUTPUT) throw new Error("event payload too large");
    i.deliver(options.type, options.payload);
  }
  async restart() {
    const i = this.#inst;
    i.cache = new Map();
    i.output = i.error = undefined;
    i.start();
  }
  async pause() { this.#inst.status = "paused"; }
  async resume() { this.#inst.status = "running"; }
}

class WorkflowImpl {
  #engine;
  constructor(engine) { this.#engine = engine; }
  async create(options) {
    const e = this.#engine;
    const id = options?.id ?? crypto.randomUUID();
    if (typeof id !== "string" || id.length > 100 || !/^[a-zA-Z0-9_][a-zA-Z0-9-_]*$/.test(id)) {
      throw new Error("(instance.invalid_id) Instance id is invalid");
    }
    if (e.instances.has(id)) throw new Error("(instance.already_exists) Instance already exists");
    const inst = new Instance(e, id, options?.params === undefined ? {} : structuredClone(options.params));
    e.instances.set(id, inst);
    e.creates += 1;
    setTimeout(() => inst.start(), 0);
    return new WorkflowInstance(inst);
  }
  async get(id) {
    const inst = this.#engine.instances.get(id);
    if (!inst) throw new Error("(instance.not_found) Instance not found");
    return new WorkflowInstance(inst);
  }
}

export class Engine {
  constructor(runner, options = {}) {
    this.runner = runner;
    this.name = options.name ?? "workflow";
    this.timeScale = options.timeScale ?? 0.001;
    this.errorAsString = !!options.errorAsString;
    this.wrapStep = options.wrapStep ?? ((s) => s);
    this.instances = new Map();
    this.creates = 0;
    this.binding = new WorkflowImpl(this);
  }
  instance(id) { return this.instances.get(id); }
  // A simulated restart: abandon the current run, run again over the same cache.
  evict(id) { return this.instances.get(id).start(); }
  async settled(id) { await this.instances.get(id).settled; }
  json(id) {
    const i = this.instances.get(id);
    return JSON.stringify({
      status: i.status, output: i.output, error: i.error, runs: i.runs, log: i.log, sleeps: i.sleeps,
      waits: i.waits, retryWaits: i.retryWaits, configs: Object.fromEntries(i.configs),
      invalidConfigs: i.invalidConfigs,
    });
  }
}

// The SDK >= 1.9.0 shim: a Python NonRetryableError thrown out of a step
// callback reaches the engine as an Error named "NonRetryableError".
export function wrapWorkflowStep(step) {
  const wrapCallback = (cb) => async (...args) => {
    try {
      return await cb(...args);
    } catch (e) {
      if (e instanceof Error && e.constructor?.name === "PythonError" && e.type === "NonRetryableError") {
        const lines = e.message.split("\n").filter((l) => l.trim());
        const last = lines.at(-1) ?? "";
        const sep = last.indexOf(": ");
        throw fatal(sep < 0 ? "" : last.slice(sep + 2), "NonRetryableError");
      }
      throw e;
    }
  };
  return new Proxy(step, {
    get(target, prop) {
      const v = Reflect.get(target, prop);
      if (prop !== "do") return typeof v === "function" ? v.bind(target) : v;
      return (name, ...rest) => target.do(name, ...rest.map((a) => (typeof a === "function" ? wrapCallback(a) : a)));
    },
  });
}

export function createEngine(runner, options) {
  const opts = options && typeof options.toJs === "function" ? options.toJs({ dict_converter: Object.fromEntries }) : options;
  return new Engine(runner, opts ?? {});
}

// Read by the stub `_cloudflare_compat_flags` when the real SDK runs (CFW_IMPLICIT_DEPS=0: legacy step.do).
// CFW_SDK names the SDK the run is meant to use ("standin" | "real"), checked by a scenario.
export const flags = { implicit: process.env.CFW_IMPLICIT_DEPS !== "0", sdk: process.env.CFW_SDK ?? "standin" };

export default { createEngine, wrapWorkflowStep, validateConfig, ms, flags };

#!/usr/bin/env node
// Run a Python file (or module) under the real Pyodide interpreter in Node 20.
//
//   node miniflare/run_pyodide.mjs [options] --run path/to/script.py [-- script args...]
//   node miniflare/run_pyodide.mjs [options] --module pkg.mod       [-- script args...]
//
// Options (repeatable where it makes sense):
//   --mount HOST[:GUEST]   copy directory HOST recursively into the Pyodide FS at GUEST
//                          (default GUEST = /home/pyodide/mnt/<n>) and put GUEST on sys.path.
//                          Mount the directory that *contains* the package, e.g. /work/main/src.
//   --nodefs HOST[:GUEST]  like --mount but a live NODEFS mount (writes go to the host!).
//   --js FILE.mjs[:NAME]   import FILE and register it as Python module NAME (default cf_fakes).
//                          The registered object is the module's default export if it has one,
//                          otherwise the module namespace. If the module exports
//                          `setup(pyodide)`, it is awaited before the Python code runs.
//   --pyodide DIR          Pyodide indexURL (default: ./node_modules/pyodide next to this
//                          script; env PYODIDE_INDEX_URL also works).
//   --cwd DIR              Pyodide working directory (default /home/pyodide).
//   --main                 after running the file/module, await its `async def main()` (or call
//                          a sync one); an int return value becomes the exit status. Lets a
//                          script stay valid CPython (no top-level await) yet run async code.
//   --quiet                do not print the "pyodide X / Python Y" banner on stderr.
//
// Python code runs with top-level `await` allowed (like `python -m asyncio`), under
// Pyodide's WebLoop (asyncio on Node's event loop). `asyncio.run()` does NOT work there:
// write `await main()` at top level instead.
//
// Exit status: 0 if the Python code finished, the SystemExit code if it called sys.exit(),
// 1 (with the traceback on stderr) if it raised, 2 for usage errors.
import { readFileSync, readdirSync, statSync, existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));

// Never let an internal crash print Pyodide's 1 MB minified source line or exit 0.
function fatal(kind, e) {
  const msg = e && e.stack ? e.stack : String(e);
  process.stderr.write(`[run_pyodide] ${kind}: ${msg.length > 4000 ? msg.slice(0, 4000) + " ..." : msg}\n`);
  process.exit(1);
}
process.on("uncaughtException", (e) => fatal("uncaught exception", e));
process.on("unhandledRejection", (e) => fatal("unhandled rejection", e));

function usage(msg) {
  if (msg) process.stderr.write(`run_pyodide: ${msg}\n`);
  process.stderr.write(
    "usage: node run_pyodide.mjs [--mount DIR[:GUEST]]... [--nodefs DIR[:GUEST]]... " +
      "[--js FILE.mjs[:NAME]]... [--pyodide DIR] [--cwd DIR] [--main] [--quiet] " +
      "(--run FILE.py | --module NAME) [-- args...]\n",
  );
  process.exit(2);
}

function splitSpec(spec) {
  // HOST[:GUEST]; host paths here never contain ':'.
  const i = spec.indexOf(":");
  return i < 0 ? [spec, null] : [spec.slice(0, i), spec.slice(i + 1)];
}

const opts = { mounts: [], nodefs: [], js: [], run: null, module: null, argv: [], quiet: false };
{
  const a = process.argv.slice(2);
  for (let i = 0; i < a.length; i++) {
    const k = a[i];
    const next = () => (i + 1 < a.length ? a[++i] : usage(`${k} needs a value`));
    if (k === "--") { opts.argv = a.slice(i + 1); break; }
    else if (k === "--mount") opts.mounts.push(splitSpec(next()));
    else if (k === "--nodefs") opts.nodefs.push(splitSpec(next()));
    else if (k === "--js") opts.js.push(splitSpec(next()));
    else if (k === "--run") opts.run = next();
    else if (k === "--module" || k === "-m") opts.module = next();
    else if (k === "--pyodide") opts.pyodide = next();
    else if (k === "--cwd") opts.cwd = next();
    else if (k === "--quiet" || k === "-q") opts.quiet = true;
    else if (k === "--main") opts.main = true;
    else if (k === "-h" || k === "--help") usage();
    else usage(`unknown argument ${k}`);
  }
  if (!opts.run === !opts.module) usage("give exactly one of --run or --module");
}

const indexURL = path.resolve(
  opts.pyodide || process.env.PYODIDE_INDEX_URL || path.join(here, "node_modules", "pyodide"),
) + "/";
if (!existsSync(path.join(indexURL, "pyodide.mjs"))) usage(`no pyodide.mjs in ${indexURL} (run npm install in ${here})`);
const { loadPyodide } = await import(pathToFileURL(path.join(indexURL, "pyodide.mjs")).href);

const t0 = performance.now();
const pyodide = await loadPyodide({
  indexURL,
  stdout: (s) => process.stdout.write(s + "\n"),
  stderr: (s) => process.stderr.write(s + "\n"),
});
const FS = pyodide.FS;

function mkdirp(p) {
  let cur = "";
  for (const part of p.split("/").filter(Boolean)) {
    cur += "/" + part;
    try { FS.mkdir(cur); } catch (e) { /* exists */ }
  }
}

function copyTree(host, guest) {
  mkdirp(guest);
  for (const name of readdirSync(host)) {
    if (name === "__pycache__" || name === "node_modules" || name === ".git") continue;
    const h = path.join(host, name);
    const g = guest + "/" + name;
    const st = statSync(h);
    if (st.isDirectory()) copyTree(h, g);
    else if (st.isFile()) FS.writeFile(g, readFileSync(h));
  }
}

const sysPath = [];
let n = 0;
for (const [host, guest0] of opts.mounts) {
  const guest = guest0 || `/home/pyodide/mnt/${n++}`;
  if (!existsSync(host) || !statSync(host).isDirectory()) usage(`--mount: not a directory: ${host}`);
  copyTree(path.resolve(host), guest);
  sysPath.push(guest);
}
for (const [host, guest0] of opts.nodefs) {
  const guest = guest0 || `/home/pyodide/mnt/${n++}`;
  mkdirp(guest);
  FS.mount(FS.filesystems.NODEFS, { root: path.resolve(host) }, guest);
  sysPath.push(guest);
}

for (const [file, name0] of opts.js) {
  const mod = await import(pathToFileURL(path.resolve(file)).href);
  const obj = mod.default !== undefined ? mod.default : { ...mod };
  if (typeof mod.setup === "function") await mod.setup(pyodide);
  pyodide.registerJsModule(name0 || "cf_fakes", obj);
}

let scriptGuest = null;
if (opts.run) {
  const host = path.resolve(opts.run);
  if (!existsSync(host)) usage(`--run: no such file ${host}`);
  // Put the script at its host path inside the FS too, so tracebacks and __file__ read well,
  // and its directory on sys.path (like CPython does for `python script.py`).
  mkdirp(path.dirname(host));
  FS.writeFile(host, readFileSync(host));
  scriptGuest = host;
  sysPath.unshift(path.dirname(host));
}

const cwd = opts.cwd || "/home/pyodide";
mkdirp(cwd);
FS.chdir(cwd);

const runner = pyodide.runPython(`
import ast, sys, traceback, inspect, runpy, types

def _make_runner():
    async def run(kind, target, argv, extra_path, call_main):
        sys.dont_write_bytecode = True
        for p in reversed(list(extra_path)):
            if p not in sys.path:
                sys.path.insert(0, p)
        sys.argv = [target] + list(argv)
        try:
            if kind == "run":
                with open(target) as f:
                    src = f.read()
                code = compile(src, target, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
                mod = types.ModuleType("__main__")
                mod.__file__ = target
                sys.modules["__main__"] = mod
                res = eval(code, mod.__dict__)
                if inspect.iscoroutine(res):
                    await res
                g = mod.__dict__
            else:
                g = runpy.run_module(target, run_name="__main__", alter_sys=True)
            if call_main:
                fn = g.get("main")
                if not callable(fn):
                    print(f"run_pyodide: --main given but {target} defines no main()", file=sys.stderr)
                    return 2
                res = fn()
                if inspect.isawaitable(res):
                    res = await res
                if isinstance(res, int) and not isinstance(res, bool):
                    return res
            return 0
        except SystemExit as e:
            c = e.code
            if c is None:
                return 0
            if isinstance(c, int):
                return c
            print(c, file=sys.stderr)
            return 1
        except BaseException:
            traceback.print_exc()
            return 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
    return run

_make_runner()
`);

if (!opts.quiet) {
  const pyver = pyodide.runPython("import sys; sys.version.split()[0]");
  process.stderr.write(
    `[run_pyodide] pyodide ${pyodide.version} / Python ${pyver} loaded in ${Math.round(performance.now() - t0)} ms\n`,
  );
}

let code = 1;
try {
  code = await runner(
    opts.run ? "run" : "module",
    opts.run ? scriptGuest : opts.module,
    pyodide.toPy(opts.argv),
    pyodide.toPy(sysPath),
    !!opts.main,
  );
} catch (e) {
  // Should not happen (the runner catches everything), but never exit 0 on a crash.
  process.stderr.write(`[run_pyodide] harness error: ${e && e.stack ? e.stack : e}\n`);
  code = 1;
}
// Exit explicitly: pending asyncio timers/tasks would otherwise keep Node alive.
process.exitCode = code;
setImmediate(() => process.exit(code));

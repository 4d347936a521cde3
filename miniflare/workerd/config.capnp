# workerd config: a Python Worker (`main`) with a JavaScript Durable Object test double
# (`WorkflowDO`, in service `do`) bound as namespace binding WORKFLOW_DO.
# Run via ./serve.sh (picks a free loopback port, overrides socket and storage dir).
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [
    (name = "main", worker = .pyWorker),
    (name = "do", worker = .doWorker),
    # DO storage on disk; serve.sh overrides the path with --directory-path do-storage=DIR
    (name = "loopback", network = (allow = ["local"])),
    (name = "do-storage", disk = (path = "/tmp/workkit-do-storage", writable = true)),
  ],
  sockets = [
    # serve.sh overrides with --socket-addr http=127.0.0.1:PORT
    (name = "http", address = "127.0.0.1:8788", http = (), service = "main"),
  ],
);

const pyWorker :Workerd.Worker = (
  modules = [
    # the first module is the entry point: module-level `async def on_fetch(request, env)`
    (name = "worker.py", pythonModule = embed "py/worker.py"),
    # a multi-file package, one pythonModule entry per file
    (name = "pkg/__init__.py", pythonModule = embed "py/pkg/__init__.py"),
    (name = "pkg/sub.py", pythonModule = embed "py/pkg/sub.py"),
    # pyodide-http vendored as plain modules (see ../NOTES.md, item 4)
    (name = "pyodide_http/__init__.py", pythonModule = embed "py/pyodide_http/__init__.py"),
    (name = "pyodide_http/_core.py", pythonModule = embed "py/pyodide_http/_core.py"),
    (name = "pyodide_http/_requests.py", pythonModule = embed "py/pyodide_http/_requests.py"),
    (name = "pyodide_http/_streaming.py", pythonModule = embed "py/pyodide_http/_streaming.py"),
    (name = "pyodide_http/_urllib.py", pythonModule = embed "py/pyodide_http/_urllib.py"),
  ],
  compatibilityDate = "2024-11-01",
  compatibilityFlags = ["python_workers"],
  bindings = [
    (name = "WORKFLOW_DO", durableObjectNamespace = (className = "WorkflowDO", serviceName = "do")),
    (name = "GREETING", text = "hello from a text binding"),
  ],
  # outgoing fetch()/XHR of the Python worker: loopback only (test servers on 127.0.0.1)
  globalOutbound = "loopback",
);

const doWorker :Workerd.Worker = (
  modules = [
    (name = "do.js", esModule = embed "js/do.js"),
  ],
  compatibilityDate = "2024-11-01",
  durableObjectNamespaces = [
    (className = "WorkflowDO", uniqueKey = "workkit-workflow-do-test-double"),
  ],
  durableObjectStorage = (localDisk = "do-storage"),
);

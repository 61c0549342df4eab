"""What the measurement scripts share: a private smtp-sink and a `mailroom serve` on loopback, and
calls to its API. Everything lives in one temporary folder, removed by `close()`."""
import json, os, shutil, socket, subprocess, tempfile, time, urllib.request


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close(); return port


class Peers:
    """smtp-sink with `sink_options` (it dumps every message into `self.dumps`) and the mailroom
    `binary` serving a data folder whose config file holds `engine_toml`."""

    def __init__(self, binary, sink_options, engine_toml):
        self.binary = binary
        self.work = tempfile.mkdtemp(); os.chmod(self.work, 0o755)
        self.dumps = os.path.join(self.work, "dumps"); os.makedirs(self.dumps); os.chmod(self.dumps, 0o777)
        self.sink_port, self.api_port = free_port(), free_port()
        self.sink = subprocess.Popen(["/usr/sbin/smtp-sink", "-u", "nobody", *sink_options, "-d", self.dumps + "/m.",
                                      f"127.0.0.1:{self.sink_port}", "64"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.data = os.path.join(self.work, "data"); os.makedirs(self.data)
        with open(os.path.join(self.data, "mailroom.toml"), "w") as f:
            f.write("[engine]\n" + engine_toml)
        self.base = f"http://127.0.0.1:{self.api_port}"
        self.server = None
        self.start()
        self.token = open(os.path.join(self.data, "admin-token")).read().strip()

    def start(self):
        self.server = subprocess.Popen([self.binary, "serve", "--data-dir", self.data, "--listen",
                                        f"127.0.0.1:{self.api_port}"],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(400):
            try:
                urllib.request.urlopen(self.base + "/healthz"); return
            except Exception:
                time.sleep(0.05)
        raise SystemExit("mailroom did not start")

    def call(self, method, path, body=None):
        request = urllib.request.Request(self.base + path, method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request) as response:
            text = response.read()
            return json.loads(text) if text else None

    def account(self, name, connections):
        return self.call("POST", "/v1/accounts", {"connector": "smtp", "name": name,
            "email_address": f"{name}@example.com", "host": "127.0.0.1", "port": self.sink_port,
            "security": "none", "concurrency_limit": connections})

    def dumped(self):
        """Message-ID → [modification times] of the messages smtp-sink received."""
        found = {}
        for name in os.listdir(self.dumps):
            path = os.path.join(self.dumps, name)
            for line in open(path, errors="replace"):
                if line.lower().startswith("message-id:"):
                    found.setdefault(line.split(":", 1)[1].strip(), []).append(os.path.getmtime(path))
                    break
        return found

    def close(self):
        for process in (self.server, self.sink):
            if process is not None:
                process.terminate(); process.wait()
        shutil.rmtree(self.work, ignore_errors=True)

"""A stand-in worker host speaking aebench.worker's protocol, for runner tests without any ML framework.

argv[1] is a comma-separated behaviour per cell index: ok, slow (ok after 4 s: time to kill its worker), unknown (an
ok exit whose metrics include two the registry lacks), malformed (an ok exit whose result has no metrics), chatter
(the host prints a line that is not the protocol, as a plugin printing to stdout would, then dies), crash, hang, segv. An ok cell that trains (the task's "trains") reports a quality figure and writes the
weights file; one that only times reports its speed alone, as aebench.worker does.
"""

import json
import os
import signal
import sys
import time

behaviours = sys.argv[1].split(",")
print(json.dumps({"event": "ready", "pid": os.getpid()}), flush=True)
for line in sys.stdin:
    task = json.loads(line)
    index = task["cell"]["index"]
    if behaviours[index] == "chatter":
        print("hello from a plugin", flush=True)
        print("the host's own last words", file=sys.stderr, flush=True)
        sys.exit(1)
    pid = os.fork()
    if pid == 0:
        log = os.open(task["log_path"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(log, 1)
        os.dup2(log, 2)
        behaviour = behaviours[index]
        print(f"cell {index} does {behaviour}", file=sys.stderr, flush=True)
        if behaviour == "slow":
            time.sleep(4)
        if behaviour in ("ok", "slow", "unknown"):
            metrics = {"timing.speed_s": 0.5, "speed.infer_ips": 1000.0 * (task["cell"]["threads"] or 1)}
            trains = task.get("trains", True)
            if trains:
                metrics.update({"timing.train_s": 1.0, "quality.mse": 0.01})
                if task.get("weights_path"):
                    with open(task["weights_path"], "w") as handle:
                        handle.write("weights")
            if behaviour == "unknown":
                metrics.update({"quality.made_up": 1.0, "speed.nonsense_ips": 2.0})
            info = {"fake": True, "trains": trains, "weights_path": task.get("weights_path")}
            if not trains and task.get("weights_path") and os.path.exists(task["weights_path"]):
                with open(task["weights_path"]) as handle:
                    info["weights_seen"] = handle.read()  # what the training cell left for this one to time
            with open(task["result_path"], "w") as handle:
                json.dump({"metrics": metrics, "info": info}, handle)
            os._exit(0)
        if behaviour == "malformed":
            with open(task["result_path"], "w") as handle:
                json.dump({"info": {}}, handle)
            os._exit(0)
        if behaviour == "crash":
            print("Traceback (most recent call last):\n  File x\nValueError: the model exploded", file=sys.stderr, flush=True)
            os._exit(3)
        if behaviour == "segv":
            os.kill(os.getpid(), signal.SIGSEGV)
        while True:  # hang
            time.sleep(1)
    print(json.dumps({"event": "started", "pid": pid}), flush=True)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"event": "exited", "exit_code": os.waitstatus_to_exitcode(status)}), flush=True)

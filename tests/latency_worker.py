"""Run by test_latency: one process timing a model under the host lock, printing when each call ran."""

import json
import sys
import time

sys.path.insert(0, sys.argv[1])  # tests/, for conftest.make_frame

import motune as mt  # noqa: E402
from conftest import make_frame  # noqa: E402
from motune.metrics import measure  # noqa: E402


class Stamped:
    def __init__(self):
        self.calls = []

    def predict(self, X):
        self.calls.append(time.time())
        time.sleep(0.002)
        return [0] * len(X)


task = mt.Task.from_frame(make_frame(200), label="y", sensitive="group", seed=0)
model = Stamped()
open(sys.argv[3], "w").close()  # ready
go = sys.argv[2]
while not __import__("os").path.exists(go):  # both workers start timing at the same moment
    time.sleep(0.005)
m = measure(model, task, ["latency_p50_ms"],
            options={"latency": {"warmup": 2, "min_count": 40, "min_time_s": 0.3, "batch_size": 8}})
print(json.dumps({"calls": model.calls[-100:], "lock_wait_s": m.details["latency"]["lock_wait_s"],
                  "first": model.calls[0], "last": model.calls[-1]}))

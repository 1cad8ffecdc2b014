"""--strategy=multi_worker: two super-sub-train worker processes on 127.0.0.1 (TF_CONFIG) train
the smoke data into one model_dir written by the chief, end with the same weights, resume after
a worker is killed; a TF_CONFIG that cannot work is refused with what is expected."""

import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from super_sub.data import prepare
from super_sub.training import distribute

from conftest import SMOKE


def _ports(n):
  sockets = [socket.socket() for _ in range(n)]
  for s in sockets:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def _start(tmp_path, model_dir, data_dir, ports, index, epochs, stage="flat", attempt=0):
  tf_config = {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
               "task": {"type": "worker", "index": index}}
  log = open(tmp_path / f"worker{index}_{attempt}.log", "w", encoding="utf-8")  # pylint: disable=consider-using-with
  process = subprocess.Popen(  # pylint: disable=consider-using-with
      [sys.executable, "-m", "super_sub.train.train", f"--model_dir={model_dir}",
       f"--data_dir={data_dir}", f"--dataset={SMOKE}", f"--stage={stage}", f"--epochs={epochs}",
       "--batch_size=8", "--strategy=multi_worker"],
      stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "TF_CONFIG": json.dumps(tf_config)})
  process.log_path = log.name
  return process


def _digest(log_path, stage="flat"):
  with open(log_path, encoding="utf-8") as f:
    found = re.findall(rf"\[{stage}\] done in .*; weights sha256 ([0-9a-f]{{64}})", f.read())
  assert found, f"{log_path}: no '[{stage}] done' line"
  return found[-1]


def _finish(processes, timeout=400):
  for p in processes:
    assert p.wait(timeout=timeout) == 0, open(p.log_path, encoding="utf-8").read()[-3000:]


@pytest.fixture
def data_dir(smoke_data_dir):
  prepare.prepare_dataset(SMOKE, data_dir=smoke_data_dir)  # workers read prepared data
  return smoke_data_dir


@pytest.mark.slow
def test_two_workers_train_one_run_and_resume_after_a_kill(tmp_path, data_dir):
  model_dir = tmp_path / "run"
  ports = _ports(2)
  workers = [_start(tmp_path, model_dir, data_dir, ports, i, epochs=2) for i in range(2)]
  _finish(workers)
  with open(model_dir / "flat" / "metrics.json", encoding="utf-8") as f:
    metrics = json.load(f)
  # The same weights on both workers; only the chief's files are left.
  assert _digest(workers[0].log_path) == _digest(workers[1].log_path) == metrics["weights_sha256"]
  assert metrics["global_batch_size"] == 16  # 2 replicas x 8
  assert sorted(os.listdir(model_dir)) == [".lock", "config.json", "flat"]
  # A later command trains the next stage from the finished one, on every worker alike.
  workers = [_start(tmp_path, model_dir, data_dir, ports, i, epochs=1, stage="generalist",
                    attempt=2) for i in range(2)]
  _finish(workers)
  assert _digest(workers[0].log_path, "generalist") == _digest(workers[1].log_path, "generalist")
  assert not (model_dir / ".workers").exists()

  # Kill worker 1 once the chief has backed up epoch 1 of 4; then the chief (its collectives
  # wait for the dead peer), then start both again: they resume from the backup.
  model_dir = tmp_path / "resumed"
  ports = _ports(2)
  workers = [_start(tmp_path, model_dir, data_dir, ports, i, epochs=4) for i in range(2)]
  history = model_dir / "flat" / "history.csv"
  deadline = time.time() + 300
  while not (history.exists() and history.read_text().count("\n") >= 2):
    assert time.time() < deadline and workers[0].poll() is None, "epoch 1 never finished"
    time.sleep(0.2)
  workers[1].send_signal(signal.SIGKILL)
  workers[1].wait()
  workers[0].send_signal(signal.SIGKILL)
  workers[0].wait()
  assert not (model_dir / "flat" / "metrics.json").exists()
  ports = _ports(2)
  workers = [_start(tmp_path, model_dir, data_dir, ports, i, epochs=4, attempt=1)
             for i in range(2)]
  _finish(workers)
  with open(workers[0].log_path, encoding="utf-8") as f:
    log = f.read()
  assert "Epoch 1/4" not in log and "Epoch 4/4" in log  # resumed, not restarted
  with open(history, encoding="utf-8") as f:
    epochs = sorted({int(row["epoch"]) for row in csv.DictReader(f)})
  assert epochs == [0, 1, 2, 3]
  assert _digest(workers[0].log_path) == _digest(workers[1].log_path)
  assert not (model_dir / ".workers").exists()


@pytest.mark.parametrize("tf_config,match", [
    (None, "reads the cluster from the TF_CONFIG environment variable, which is not set"),
    ("{cluster", "TF_CONFIG does not parse as JSON"),
    ('{"cluster": {"ps": ["h:1"]}, "task": {"type": "ps", "index": 0}}',
     r"TF_CONFIG's cluster has no chief: .* got types \['ps'\]"),
    ('{"cluster": {"worker": ["h:1", "h:2"]}, "task": {"type": "worker", "index": 2}}',
     r"'task' must name this process's type and index in the cluster \(\{'worker': 2\}\)"),
    ('{"cluster": {"worker": "h:1"}, "task": {"type": "worker", "index": 0}}',
     "'cluster' must map task types to lists of host:port addresses"),
])
def test_tf_config_that_cannot_work_is_refused(monkeypatch, tf_config, match):
  if tf_config is None:
    monkeypatch.delenv("TF_CONFIG", raising=False)
  else:
    monkeypatch.setenv("TF_CONFIG", tf_config)
  with pytest.raises(ValueError, match=match):
    distribute.worker_task()


@pytest.mark.parametrize("cluster,task,expected", [
    ({"worker": ["a:1", "b:1"]}, {"type": "worker", "index": 0}, ("worker_0", True)),
    ({"worker": ["a:1", "b:1"]}, {"type": "worker", "index": 1}, ("worker_1", False)),
    ({"chief": ["c:1"], "worker": ["a:1"]}, {"type": "worker", "index": 0}, ("worker_0", False)),
    ({"chief": ["c:1"], "worker": ["a:1"]}, {"type": "chief", "index": 0}, ("chief_0", True)),
])
def test_the_chief_is_chief_or_worker_0(monkeypatch, cluster, task, expected):
  monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": task}))
  assert distribute.worker_task() == expected

"""Read an offline W&B run back from its `run-*.wandb` transaction log.

wandb 0.31 moved its record reader into the Go core, so this decodes the log's framing
(LevelDB log format: 7-byte file header, 32 KiB blocks, 7-byte chunk headers) and parses
each record with wandb's own protobuf `Record`.
"""

from __future__ import annotations

import json
import struct
import time

from google.protobuf.message import DecodeError
from wandb.proto import wandb_internal_pb2

BLOCK = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: str):
    data = open(path, "rb").read()
    ident, magic, _version = struct.unpack("<4sHB", data[:7])
    assert (ident, magic) == (b":W&B", 0xBEE1), f"{path} is not a W&B transaction log"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:  # a block's tail too short for a header is padding
            pos += BLOCK - pos % BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def finished_records(path: str, timeout: float = 30.0) -> list:
    """The log's records once it holds the run's exit record: wandb-core writes the log
    asynchronously, and `finish()` of a process's second run can return before it has."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            done = list(records(path))
        except DecodeError:  # a record cut short while it is being written
            done = []
        if any(r.WhichOneof("record_type") == "exit" for r in done) or time.monotonic() > deadline:
            return done
        time.sleep(0.1)


def read_run(path: str) -> dict:
    """The run's group, job_type, name, tags, config, last summary values and history rows."""
    run, config, summary, history = None, {}, {}, []
    for record in finished_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            config.update({i.key: json.loads(i.value_json) for i in run.config.update})
        elif kind == "config":
            config.update({i.key: json.loads(i.value_json) for i in record.config.update})
        elif kind == "summary":
            for item in record.summary.update:
                key = item.key or ".".join(item.nested_key)
                summary[key] = json.loads(item.value_json)
        elif kind == "history":
            history.append({item.key or ".".join(item.nested_key): json.loads(item.value_json)
                            for item in record.history.item})
    return {"group": run.run_group, "job_type": run.job_type, "name": run.display_name,
            "tags": list(run.tags), "config": config, "summary": summary, "history": history}

"""A ClientApp for the worker-pool tests (imported by reference in the workers' zygote)."""

import os

import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()


@app.query()
def query(msg: Message, context: Context) -> Message:
    """``action``: ``echo`` (pid and a count kept in the context), ``raise``, or ``conv`` (a
    convolution's forward and backward on ``threads`` torch threads)."""
    config = msg.content["config"]
    if config["action"] == "raise":
        raise ValueError("the app failed on purpose")
    if config["action"] == "conv":
        torch.set_num_threads(int(config["threads"]))
        conv = torch.nn.Conv2d(1, 16, 3)
        conv(torch.randn(128, 1, 28, 28)).sum().backward()
    seen = int(context.state.config_records.get("seen", ConfigRecord({"n": 0}))["n"]) + 1
    context.state.config_records["seen"] = ConfigRecord({"n": seen})
    reply = ConfigRecord({"pid": os.getpid(), "seen": seen, "threads": torch.get_num_threads()})
    return Message(RecordDict({"reply": reply}), reply_to=msg)

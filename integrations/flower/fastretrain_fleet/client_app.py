"""The fleet's device side (a Flower ClientApp): ``train`` answers with the statistics of the
samples the server has not acknowledged; ``evaluate`` imports the fleet's head into the local
state. Node config: ``device-id``, ``model``, ``data``, ``state-dir`` (required); ``available``,
``test``, ``test-limit``, ``threads``, ``dp-epsilon``/``dp-delta``/``dp-clip``/``dp-labels``."""

from __future__ import annotations

import json

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from .device import Device

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    ask = msg.content["ask"]
    device = Device(context.node_config)
    acked = json.loads(str(ask["acked"])).get(device.id, 0)
    reply = device.increment(int(ask["round"]), int(acked))
    return Message(RecordDict({"reply": ConfigRecord(reply)}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    weights = msg.content["head"]["weights"].numpy()
    fleet = dict(msg.content["fleet"])
    result = Device(context.node_config).take_head(weights, fleet)
    return Message(RecordDict({"evaluation": ConfigRecord(result)}), reply_to=msg)

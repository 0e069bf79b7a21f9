"""The fleet's server: adds up the devices' statistics exactly, solves the head, sends it back.

Each round: a ``train`` message to every connected device (with what the server has
acknowledged of each), the replies checked one by one (a malformed reply, one from another
backbone or one that does not continue where the server left off is refused with the reason and
changes nothing), each accepted increment added to that device's statistics, the fleet's
statistics summed in sorted device order, the head solved (lambda by GCV unless set), the
server state saved atomically, then a ``head`` message to every device. A device that fails or
does not answer within ``round-timeout`` is left out of the round and reported; it sends the
missed samples in a later round. A server killed between rounds continues from its saved state.
"""

from __future__ import annotations

import io
import json
import math
import time
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp

import fastretrain
from fastretrain.privacy import lambda_grid

from .wire import FleetError, ServerState, fingerprint_text, write_atomically

app = ServerApp()


def _log(event: str, **fields) -> None:
    print(json.dumps({"fleet": event, **fields}), flush=True)


def _wait_for_devices(grid: Grid, minimum: int, seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= minimum or time.monotonic() > deadline:
            return nodes
        time.sleep(0.5)


def exchange(grid: Grid, messages: list[Message], timeout: float):
    """Sends ``messages`` and collects the replies until all are in or ``timeout`` passes:
    ``([(node, reply)], [nodes that did not answer])``. Replies are matched to the messages they
    answer, so an error reply made by the SuperLink for a dead node names that node."""
    ids = list(grid.push_messages(messages))
    node_of = {mid: m.metadata.dst_node_id for mid, m in zip(ids, messages) if mid}
    pending = set(node_of)
    replies = []
    deadline = time.monotonic() + timeout
    while pending:
        for reply in grid.pull_messages(list(pending)):
            mid = reply.metadata.reply_to_message_id
            if mid in pending:
                pending.discard(mid)
                replies.append((node_of[mid], reply))
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    return replies, sorted(node_of[mid] for mid in pending)


def accept_reply(state: ServerState, content: RecordDict) -> dict:
    """Checks one device's reply and adds its increment to the server state; raises
    :class:`FleetError` (nothing changed) when it cannot be used."""
    try:
        reply = content["reply"]
        device = str(reply["device"])
        fingerprint = json.loads(str(reply["fingerprint"]))
        start, end = int(reply["start"]), int(reply["end"])
        data = bytes(reply["statistics"])
    except (KeyError, TypeError, ValueError) as e:
        raise FleetError(f"malformed reply ({type(e).__name__}: {e})") from None
    if not device:
        raise FleetError("malformed reply (no device name)")
    if state.fingerprint is not None and fingerprint_text(fingerprint) != fingerprint_text(
        state.fingerprint
    ):
        raise FleetError(
            f"device {device} runs another backbone: {fingerprint_text(fingerprint)}, the "
            f"fleet's is {fingerprint_text(state.fingerprint)}"
        )
    acked = state.acked.get(device, 0)
    if start != acked or end < start:
        raise FleetError(
            f"device {device} sent samples {start}..{end}, the server holds {acked} of its "
            "samples: refused (it resends from there next round)"
        )
    if end == start:
        return {"device": device, "new_samples": 0}
    try:
        increment = fastretrain.Statistics.from_bytes(data)
    except fastretrain.Error as e:
        raise FleetError(f"device {device} sent unusable statistics: {e}") from None
    dim = int(fingerprint.get("feature_dim", -1))
    if increment.dim != dim:
        raise FleetError(
            f"device {device} sent statistics of dimension {increment.dim}, its backbone has {dim}"
        )
    privacy = str(reply.get("privacy", "") or "")
    try:
        sigma = float(json.loads(privacy)["sigma"]) if privacy else 0.0
    except (ValueError, KeyError, TypeError):
        raise FleetError(f"device {device} sent unreadable privacy settings") from None
    # A private release's count is G[bias, bias] plus noise of deviation σ.
    if abs(increment.samples - (end - start)) > (10 * sigma if sigma > 0 else 0.5):
        raise FleetError(
            f"device {device} sent statistics of {increment.samples} samples for samples "
            f"{start}..{end}"
        )
    if state.fingerprint is None:
        state.fingerprint = fingerprint
    state.noise_variance += sigma * sigma
    # Exactly the device's own arithmetic: its local state starts empty and merges each
    # acknowledged increment in order.
    mine = state.statistics.get(device) or fastretrain.Statistics(dim)
    mine.merge(increment)
    state.statistics[device] = mine
    state.acked[device] = end
    return {"device": device, "new_samples": end - start}


def solve(state: ServerState, lam: float) -> dict:
    total = state.total()
    if lam > 0:
        best, grid, scores = lam, [], []
    else:
        noise = math.sqrt(state.noise_variance)
        best, grid, scores = total.gcv(lambda_grid(noise, total.dim) if noise > 0 else None)
    weights = total.solve(best)
    return {
        "total": total,
        "weights": weights,
        "labels": total.labels,
        "lambda": best,
        "samples": total.samples,
        "gcv": dict(zip(grid, scores)),
    }


def save_head(path: Path, head: dict) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, weights=head["weights"], labels=np.array(head["labels"]),
             lam=head["lambda"], samples=head["samples"])
    write_atomically(path, buffer.getvalue())


@app.main()
def main(grid: Grid, context: Context) -> None:
    config = context.run_config
    rounds = int(config["num-server-rounds"])
    state_path = Path(str(config["server-state"])).expanduser()
    out_dir = Path(str(config["out-dir"])).expanduser()
    timeout = float(config["round-timeout"])
    lam = float(config["lambda"])
    state = ServerState.load(state_path)
    if not state.fingerprint and str(config.get("model-sha256", "")):
        pinned = str(config["model-sha256"]).lower()
    else:
        pinned = ""
    if state.round:
        _log("resumed", round=state.round, devices=sorted(state.acked), state=str(state_path))
    reports = []
    report_path = out_dir / "rounds.json"
    if report_path.exists() and state.round:
        reports = json.loads(report_path.read_text())[: state.round]
    for rnd in range(state.round + 1, rounds + 1):
        nodes = _wait_for_devices(grid, int(config["min-devices"]), float(config["wait-devices"]))
        started = time.monotonic()
        ask = ConfigRecord({"round": rnd, "acked": json.dumps(state.acked, sort_keys=True)})
        messages = [
            Message(RecordDict({"ask": ask}), dst_node_id=node, message_type=MessageType.TRAIN)
            for node in nodes
        ]
        replies, silent = exchange(grid, messages, timeout)
        accepted, refused, failed = [], [], []
        for node, reply in replies:
            if reply.has_error():
                failed.append({"node": node, "error": reply.error.reason})
                continue
            try:
                if pinned:
                    fp = json.loads(str(reply.content["reply"]["fingerprint"]))
                    if str(fp.get("model_sha256", "")).lower() != pinned:
                        raise FleetError(f"reply from another model than model-sha256 {pinned}")
                accepted.append({"node": node, **accept_reply(state, reply.content)})
            except FleetError as e:
                refused.append({"node": node, "reason": str(e)})
            except Exception as e:  # a reply must never stop the fleet
                refused.append({"node": node, "reason": f"malformed reply ({e!r})"})
        if not state.statistics:
            _log("round_failed", round=rnd, reason="no statistics from any device yet",
                 refused=refused, failed=failed, silent=silent)
            raise SystemExit(f"round {rnd}: no device sent usable statistics")
        head = solve(state, lam)
        state.round = rnd
        state.save(state_path)
        save_head(out_dir / "head.npz", head)
        write_atomically(out_dir / "statistics.bin", head["total"].to_bytes())
        fleet = ConfigRecord({
            "labels": json.dumps(head["labels"]),
            "lambda": float(head["lambda"]),
            "samples": float(head["samples"]),
            "round": rnd,
            "acked": json.dumps(state.acked, sort_keys=True),
        })
        # The head goes to the devices that answered this round; the others get the next
        # round's head (a dead device is not waited for twice).
        healthy = sorted(node for node, reply in replies if not reply.has_error())
        head_messages = [
            Message(RecordDict({"head": ArrayRecord({"weights": Array(head["weights"])}),
                                "fleet": fleet}),
                    dst_node_id=node, message_type=MessageType.EVALUATE)
            for node in healthy
        ]
        evaluations = [
            dict(reply.content["evaluation"])
            for _, reply in exchange(grid, head_messages, timeout)[0]
            if not reply.has_error()
        ]
        report = {
            "round": rnd,
            "devices_asked": len(nodes),
            "accepted": accepted,
            "refused": refused,
            "failed": failed,
            "no_reply": silent,
            "lambda": head["lambda"],
            "samples": head["samples"],
            "acked": dict(state.acked),
            "evaluations": evaluations,
            "seconds": round(time.monotonic() - started, 3),
        }
        reports.append(report)
        write_atomically(report_path, json.dumps(reports, indent=1).encode())
        _log("round", **report)

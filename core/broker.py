"""Reading the broker's own storage for our queue: which jobs have a message waiting, and the removal of messages
the embedded broker keeps after they were consumed.

kombu's SQLAlchemy transport (the embedded default) marks a fetched message `visible = False` and never deletes
it: acknowledging is a no-op on its table, and a message restored after a worker shutdown is inserted again as a
new row. Consumed messages therefore pile up forever unless something deletes them. Deleting invisible rows is
always safe: nothing reads them again (not even an unacknowledged message's restore, which re-sends its copy
held in memory).

Redis keeps waiting messages in a list per queue (one per priority step) and delivered, unacknowledged ones in a
separate hash; SQLAlchemy keeps waiting ones as visible rows. Both are read here without consuming anything.
"""

from __future__ import annotations

import base64
import json

from core.queue import QUEUES, RUN_JOB, get_celery


def waiting_job_ids(queues: tuple[str, ...] | str = QUEUES) -> set[str] | None:
    """Ids of the jobs whose run message waits in any of `queues` (not yet delivered to any worker); None when
    the broker's transport is one this module cannot read."""
    queues = (queues,) if isinstance(queues, str) else queues
    with get_celery().connection_for_read() as connection:
        channel = connection.default_channel
        driver = connection.transport.driver_type
        if driver == "redis":
            payloads = [raw for queue in queues for step in channel.priority_steps
                        for raw in channel.client.lrange(channel._q_for_pri(queue, step), 0, -1)]
        elif driver == "sql":
            payloads = [raw for queue in queues for raw in _visible_payloads(channel, queue)]
        else:
            return None
    return {job_id for job_id in map(_job_id, payloads) if job_id}


def queue_depths(queues: tuple[str, ...] = QUEUES) -> dict[str, int]:
    """How many messages wait in each queue (delivered, unacknowledged ones not counted), for metrics."""
    with get_celery().connection_for_read() as connection:
        channel = connection.default_channel
        # kombu's size: a Redis queue's priority lists summed, or the embedded broker's visible rows
        depths = {queue: channel._size(queue) for queue in queues}
        if connection.transport.driver_type == "sql":
            channel.session.commit()  # end the read transaction: the SQLite file must not stay locked
        return depths


def purge_consumed_messages(queues: tuple[str, ...] | str = QUEUES) -> int:
    """Delete the embedded broker's consumed (invisible) messages of `queues`; returns how many."""
    queues = (queues,) if isinstance(queues, str) else queues
    with get_celery().connection_for_write() as connection:
        if connection.transport.driver_type != "sql":
            return 0  # Redis removes a message when it is acknowledged
        channel = connection.default_channel
        session = channel.session
        deleted = 0
        for queue in queues:
            found = session.query(channel.queue_cls).filter(channel.queue_cls.name == queue).first()
            if found is not None:
                deleted += (session.query(channel.message_cls)
                            .filter(channel.message_cls.queue_id == found.id,
                                    channel.message_cls.visible.is_(False))
                            .delete(synchronize_session=False))
        session.commit()
        return deleted


def _visible_payloads(channel, queue: str) -> list[str]:
    session = channel.session
    found = session.query(channel.queue_cls).filter(channel.queue_cls.name == queue).first()
    payloads = [] if found is None else [
        row[0] for row in session.query(channel.message_cls.payload)
        .filter(channel.message_cls.queue_id == found.id, channel.message_cls.visible.is_(True))]
    session.commit()  # end the read transaction: the SQLite file must not stay locked
    return payloads


def _job_id(raw: str | bytes) -> str | None:
    """The job id of a run_job message (Celery protocol 2: body = [args, kwargs, embed]), else None."""
    try:
        message = json.loads(raw)
        if message.get("headers", {}).get("task") != RUN_JOB:
            return None
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return str(args[0]) if args else None
    except (ValueError, KeyError, IndexError, TypeError):
        return None  # not one of ours: another task, or a format this code does not know

"""Events: the event value (event.py, shared with clients), the durable event log
(log.py), the EventBus actor (bus.py) and the notify URLs it feeds (notify.py)."""

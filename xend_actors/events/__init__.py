"""Events: the event value (event.py, shared with clients), the durable event log
(log.py) and the EventBus actor (bus.py)."""

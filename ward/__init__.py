"""Ward operations: the live ward page, the terminal alert consumer and the alert audit.

- :mod:`bedside.ward.feed`: the ward as the page shows it, fed message by message
  (from Kafka, or in process by the demo through :class:`~bedside.ward.feed.WardFeed`);
- :mod:`bedside.ward.web`: ``bedside ward``, the page and its live updates;
- :mod:`bedside.ward.watch`: ``bedside watch``, alerts in a terminal, and acknowledgements;
- :mod:`bedside.ward.audit`: every alert record and acknowledgement in a database;
- :mod:`bedside.ward.kafka`: reading topics without a consumer group, publishing acks.
"""

#: The SQLite file ``--audit-db`` uses when given without a value (the embedded default).
DEFAULT_AUDIT_DB = "bedside-audit.db"

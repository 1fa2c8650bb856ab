"""Topic → store: the Kafka client settings, the consumer loop shared by ``otelcost enforce``
and ``otelcost rollup``, decoding and dead letters, and the budget enforcer."""

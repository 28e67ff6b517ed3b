"""The inference capability: the request handler, model clients and their errors, results,
replies, usage metering and rejection records."""

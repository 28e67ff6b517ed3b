"""A durable AMQP 1.0 broker with Service Bus semantics, for the real azure-servicebus SDK.

Microsoft's emulator needs Docker; this one needs only python-qpid-proton. Never deployed.
"""

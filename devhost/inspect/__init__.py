"""`python -m devhost inspect`: results, rejections, usage, queues, dead letters, events."""

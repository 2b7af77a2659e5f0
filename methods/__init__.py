"""Methods: one module per method (or family), each class registered with ``@register_method``.
Modules here are imported automatically by ``bench.method.METHODS``: adding a file is enough."""
